"""Instruction-tuning data preparation, split by concern: `clean` (pure functions over records: normalisation,
dedup, language filter, length buckets), `sampler` (`MixedSampler`) and `prepare` (the configs, the pipeline
`prepare`, the data card and the dry-run `plan`). Import from the submodules; this package re-exports nothing."""
