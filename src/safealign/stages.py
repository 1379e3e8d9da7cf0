"""What each stage kind does when its unit runs. `resolve(ref)` turns a 'stage:' reference into a path.

train: load the model (merging the adapters of the stages it comes from), add a fresh LoRA adapter (a score
       head on top for score-model methods), build the streams the method asks for, run the shared loop, save.
eval:  load one model, run every configured evaluation, write metrics and per-sample records.
pairs: build helpful / harmless preference pairs from PKU-SafeRLHF-schema rows and write the splits.
generate: sample responses from a model, score and filter them, write prompt/response JSONL (distill.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from safealign.errors import DataError
from safealign.io import atomic_write_json, atomic_write_jsonl
from safealign.schema import EvalStage, PairsStage, TrainStage


def run_train(unit, resolve) -> dict:
    import torch

    from safealign.loop import make_accelerator, total_steps, train
    from safealign.methods import METHODS
    from safealign.models import add_lora, count_parameters, load_causal_lm, load_tokenizer, pick_dtype, resolve_model_path, save_model
    from safealign.score_model import ScoreModel, save_score_model

    cfg: TrainStage = resolve_refs(unit.config, resolve)  # model, data and the method's own paths
    method_cls = METHODS[cfg.method.registry_name]
    accelerator = make_accelerator(cfg.train, unit.out_dir)
    model_path = resolve_model_path(cfg.model.path)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    if method_cls.data_kind == "pairs":
        streams, summary = _pair_streams(cfg, tokenizer, accelerator, method_cls.pair_labels)
    elif method_cls.data_kind == "candidates":
        streams, summary = _candidate_streams(cfg, tokenizer, accelerator)
    elif method_cls.data_kind == "unlearn":
        streams, summary = _unlearn_streams(cfg, tokenizer, accelerator)
    elif cfg.data.messages:
        streams, summary = _chat_streams(cfg, tokenizer, accelerator)
    else:
        streams, summary = _example_streams(cfg, tokenizer, accelerator, f"stages.{unit.stage}.data")
    dtype = pick_dtype(cfg.model.dtype, cfg.train.precision)
    # The fresh adapter's initial weights come from the global generator: seed it here, or they would depend on
    # whatever ran earlier in this process (which stages were cached), and reruns of a unit would differ.
    torch.manual_seed(cfg.seed)
    model = add_lora(load_causal_lm(model_path, dtype, cfg.model.trust_remote_code, cfg.model.quantization), cfg.lora,
                     cfg.model.gradient_checkpointing, quantized=cfg.model.quantization != "none")
    if method_cls.model_kind == "score":
        model = ScoreModel(model)
    trainable, total = count_parameters(model)
    steps = total_steps(cfg.train, streams["train"])
    print(f"   {summary}; {steps} steps; {trainable:,} of {total:,} parameters trainable", flush=True)
    method = method_cls(cfg.method, steps)
    evaluate = _validation(cfg, tokenizer) if cfg.data.validation else None
    result = train(model, method, streams, cfg.train, unit.out_dir, accelerator, cfg.seed, evaluate=evaluate,
                   tokenizer=tokenizer)
    if accelerator.is_main_process:
        save = save_score_model if method_cls.model_kind == "score" else save_model
        save(result["model"], tokenizer, unit.out_dir / "model", base=model_path)
    accelerator.wait_for_everyone()
    return {"steps": result["steps"], "final_loss": result["final_loss"], "trainable_params": trainable,
            "data": summary, "setup_s": result["setup_s"], "step_s": result["step_s"]}


def _stream_kwargs(cfg, tokenizer, accelerator) -> dict:
    return dict(pad_id=tokenizer.pad_token_id, shuffle=cfg.train.shuffle, rank=accelerator.process_index,
                world_size=accelerator.num_processes)


def _example_streams(cfg, tokenizer, accelerator, where: str):
    """The task mix (with poison, and guide rows under guide_mix) as 'train'; guide data as 'guide' and harmful
    data as 'harmful' when given."""
    from safealign.data.formats import tokenize_example
    from safealign.data.mixing import guide_examples, harmful_examples, training_mix
    from safealign.data.streams import BatchStream

    mix = training_mix(cfg.data, where)
    extra = {"guide": [] if cfg.data.guide_mix else guide_examples(cfg.data, where),
             "harmful": harmful_examples(cfg.data, where)}
    tokenize = lambda examples: [tokenize_example(tokenizer, e, cfg.model.max_length) for e in examples]  # noqa: E731
    kwargs = _stream_kwargs(cfg, tokenizer, accelerator)
    streams = {"train": BatchStream(tokenize(mix), cfg.train.batch_size, seed=cfg.seed, **kwargs)}
    for i, (name, examples) in enumerate(extra.items(), start=1):
        if examples:
            streams[name] = BatchStream(tokenize(examples), cfg.train.batch_size, seed=cfg.seed + i, **kwargs)
    poison = sum(e["meta"].get("poison", False) for e in mix)
    mixed = sum(e["meta"].get("guide", False) for e in mix)
    return streams, (f"{len(mix)} training rows ({poison} poison, {mixed} guide), {len(extra['guide'])} guide rows, "
                     f"{len(extra['harmful'])} harmful rows")


def _unlearn_streams(cfg, tokenizer, accelerator):
    """'forget' (also 'train': the loop counts epochs over it) in a seeded random order or by difficulty
    (data.forget_order: a sequential order, which a shuffle would undo), and 'retain' when given."""
    from safealign.data import load_examples
    from safealign.data.difficulty import order_by_difficulty, weights_by_difficulty
    from safealign.data.formats import tokenize_example
    from safealign.data.streams import BatchStream
    from safealign.methods import METHODS

    kwargs = _stream_kwargs(cfg, tokenizer, accelerator)
    tokenize = lambda examples: [tokenize_example(tokenizer, e, cfg.model.max_length) for e in examples]  # noqa: E731
    forget = load_examples(cfg.data.forget)
    retain = load_examples(cfg.data.retain) if cfg.data.retain is not None else []
    rewrite = getattr(METHODS[cfg.method.registry_name], "rewrite_forget", None)
    if rewrite is not None:  # CL / IDK / RL: new forget answers (seeded), before tokenization and ordering
        forget = rewrite(forget, retain, cfg.method, cfg.seed)
    order = "random order"
    if cfg.data.forget_order == "weighted":
        kwargs = {**kwargs, "weights": weights_by_difficulty(forget, cfg.data.difficulty, cfg.data.forget, cfg.seed)}
        order = "draws weighted by difficulty"
    elif cfg.data.forget_order != "random":
        forget = order_by_difficulty(forget, cfg.data.difficulty, cfg.data.forget, cfg.data.forget_order, cfg.seed)
        kwargs = {**kwargs, "shuffle": False}
        order = f"{cfg.data.forget_order}ending difficulty"
    streams = {"forget": BatchStream(tokenize(forget), cfg.train.batch_size, seed=cfg.seed, **kwargs)}
    streams["train"] = streams["forget"]
    summary = f"{len(forget)} forget rows in {order}"
    if cfg.data.retain is not None:
        streams["retain"] = BatchStream(tokenize(retain), cfg.train.batch_size, seed=cfg.seed + 1,
                                        **_stream_kwargs(cfg, tokenizer, accelerator))
        summary += f", {len(retain)} retain rows"
    return streams, summary


def _chat_streams(cfg, tokenizer, accelerator):
    """'train': conversations under the chat template, the loss on assistant tokens (data/chat.py)."""
    from safealign.data.chat import check_messages, tokenize_messages
    from safealign.data.files import load_rows
    from safealign.data.streams import BatchStream

    rows = load_rows(cfg.data.messages, "train")
    n = cfg.data.messages_num or len(rows)
    for i in range(min(n, len(rows))):
        check_messages(rows.rows[i].get("messages"), rows.where(i))
    chosen, how = rows.rows[:n], "shuffled"
    if cfg.data.mixing:
        chosen, how = _mixed_order(chosen, cfg.data.mixing), f"in the order of {cfg.data.mixing}'s sampler"
    features = [tokenize_messages(tokenizer, r["messages"], cfg.model.max_length) for r in chosen]
    kwargs = _stream_kwargs(cfg, tokenizer, accelerator)
    if cfg.data.mixing:  # the sampler's order is the plan: no reshuffle on top
        kwargs["shuffle"] = False
    stream = BatchStream(features, cfg.train.batch_size, seed=cfg.seed, **kwargs)
    return {"train": stream}, f"{len(features)} conversations, {how}"


def _mixed_order(rows: list[dict], stats_path: str) -> list[dict]:
    """len(rows) draws from the sampler the prepare stage planned (its config is in its stats.json)."""
    import itertools
    import json

    from safealign.config import build
    from safealign.data.prepare import PrepareConfig, sampler_of

    cfg = build(PrepareConfig, json.loads(Path(stats_path).read_text())["config"])
    if any("lang" not in r or "bucket" not in r for r in rows):
        raise DataError("data.mixing: the conversations lack 'lang' / 'bucket' (they are not a prepare stage's output)")
    return list(itertools.islice(sampler_of(rows, cfg), len(rows)))


def pair_tokenizer(template: str):
    """tokenize_pair (the Alpaca prompt) or tokenize_chat_pair (the chat template), by data.template."""
    from safealign.data.chat import tokenize_chat_pair
    from safealign.data.formats import tokenize_pair

    return tokenize_chat_pair if template == "chat" else tokenize_pair


def _pair_streams(cfg, tokenizer, accelerator, labels: tuple[str, ...]):
    """One stream of preference pairs per entry of data.pairs (the first pairs_num of each); every pair must
    carry the method's `labels`."""
    from safealign.data.formats import collate_pairs
    from safealign.data.pairs import read_pairs
    from safealign.data.streams import BatchStream

    tokenize_pair = pair_tokenizer(cfg.data.template)
    streams, counts = {}, []
    for i, (name, path) in enumerate(cfg.data.pairs.items()):
        pairs = read_pairs(path)
        pairs = pairs[: cfg.data.pairs_num or len(pairs)]
        unlabelled = sum(any(p[k] is None for k in labels) for p in pairs)
        if unlabelled:
            raise DataError(f"{path}: {unlabelled} pairs lack {' / '.join(labels)}, which method "
                            f"'{cfg.method.registry_name}' needs (harmless pairs from a pairs stage carry them)")
        features = [tokenize_pair(tokenizer, p, cfg.model.max_length) for p in pairs]
        streams[name] = BatchStream(features, cfg.train.batch_size, seed=cfg.seed + i, collate_fn=collate_pairs,
                                    **_stream_kwargs(cfg, tokenizer, accelerator))
        counts.append(f"{len(pairs)} {name} pairs")
    return streams, ", ".join(counts)


def _validation(cfg, tokenizer):
    """evaluate(model) -> {"chosen_perplexity"} on the validation pairs' chosen responses."""
    from safealign.data.pairs import read_pairs
    from safealign.evals.perplexity import response_perplexity

    tokenize_pair = pair_tokenizer(cfg.data.template)
    chosen = [tokenize_pair(tokenizer, p, cfg.model.max_length)["chosen"] for p in read_pairs(cfg.data.validation)]
    return lambda model: {"chosen_perplexity": response_perplexity(model, chosen, tokenizer.pad_token_id,
                                                                   cfg.train.batch_size)}


def _candidate_streams(cfg, tokenizer, accelerator):
    """'train': rows of N scored candidates, each row one sample of N sequences (data/candidates.py)."""
    from safealign.data.candidates import collate_candidates, read_candidates, tokenize_candidates
    from safealign.data.streams import BatchStream

    rows = read_candidates(cfg.data.candidates, cfg.data.candidates_split, cfg.seed, cfg.data.candidates_ratios)
    rows = rows[: cfg.data.candidates_num or len(rows)]
    features = [tokenize_candidates(tokenizer, r, cfg.model.max_length) for r in rows]
    stream = BatchStream(features, cfg.train.batch_size, seed=cfg.seed, collate_fn=collate_candidates,
                         **_stream_kwargs(cfg, tokenizer, accelerator))
    return {"train": stream}, f"{len(rows)} rows of {len(rows[0]['candidates'])} candidates"


def run_eval(unit, resolve) -> dict:
    import torch

    from safealign.evals import EVALS
    from safealign.models import load_causal_lm, load_tokenizer, pick_dtype
    from safealign.score_model import load_score_model

    cfg: EvalStage = unit.config
    path = resolve(unit.model)
    tokenizer = load_tokenizer(path, cfg.trust_remote_code)
    loaders = {"causal_lm": load_causal_lm, "score": load_score_model}
    models = {}  # one load per kind, shared by the evaluations that need it
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics = {}
    for name, eval_cfg in cfg.evals.items():
        kind = EVALS[name].model_kind
        if kind not in models:
            models[kind] = loaders[kind](path, pick_dtype(cfg.dtype, "bf16"), cfg.trust_remote_code).to(device)
        torch.manual_seed(cfg.seed)
        files = {"out_dir": unit.out_dir / "eval"} if getattr(EVALS[name], "writes_files", False) else {}
        m, records = EVALS[name].run(resolve_refs(eval_cfg, resolve), models[kind], tokenizer, **files)
        atomic_write_jsonl(unit.out_dir / "eval" / f"{name}.samples.jsonl", records)
        atomic_write_json(unit.out_dir / "eval" / f"{name}.json", m)
        metrics.update(m)
    return {"label": unit.label, "metrics": metrics}


def resolve_refs(cfg, resolve):
    """A copy of a config dataclass with every 'stage:' string in it (at any depth, in nested dataclasses,
    dicts and lists) resolved to a path."""
    def walk(value):
        if isinstance(value, str) and value.startswith("stage:"):
            return resolve(value)
        if dataclasses.is_dataclass(value):
            return dataclasses.replace(value, **{f.name: walk(getattr(value, f.name)) for f in dataclasses.fields(value)})
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(cfg)


def run_pairs(unit, resolve) -> dict:
    from safealign.data import pku_saferlhf
    from safealign.data.files import load_rows
    from safealign.data.pairs import split_pairs, write_pair_splits

    cfg: PairsStage = unit.config
    helpful, harmless, stats = pku_saferlhf.pairs(load_rows(resolve(cfg.path), cfg.split))
    counts = write_pair_splits(split_pairs(helpful, harmless, cfg.ratios, cfg.seed), unit.out_dir)
    print(f"   {stats['rows']} rows -> {stats['helpful']} helpful and {stats['harmless']} harmless pairs; "
          f"{stats['contradictory']} rows with contradictory safety labels left out of the harmless pairs; "
          f"written to {unit.out_dir}/{{train,val,test}}/{{helpful,harmless}}_pairs.jsonl", flush=True)
    return {"stats": stats, "counts": counts}


def run_generate(unit, resolve) -> dict:
    from safealign.distill import run_generate as generate_data

    return generate_data(resolve_refs(unit.config, resolve), unit.out_dir)


def run_prepare(unit, resolve) -> dict:
    from safealign.data.files import resolve_data_path
    from safealign.data.prepare import prepare
    from safealign.models import load_tokenizer, resolve_model_path

    cfg = unit.config
    tokenizer = load_tokenizer(resolve_model_path(resolve(cfg.tokenizer)))
    sources = [dataclasses.replace(s, path=resolve_data_path(resolve(s.path))) for s in cfg.sources]
    stats = prepare(cfg.prepare_config(str(unit.out_dir), sources), lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return {k: v for k, v in stats.items() if k not in ("config",)}


def run_difficulty(unit, resolve) -> dict:
    import torch

    from safealign.data import load_examples
    from safealign.data.difficulty import difficulty_scores, write_scores
    from safealign.data.formats import tokenize_example
    from safealign.models import add_lora, load_causal_lm, load_tokenizer, resolve_model_path

    cfg = resolve_refs(unit.config, resolve)
    path = resolve_model_path(cfg.model.path)
    tokenizer = load_tokenizer(path, cfg.model.trust_remote_code)
    torch.manual_seed(cfg.seed)
    model = add_lora(load_causal_lm(path, torch.float32, cfg.model.trust_remote_code), cfg.lora)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    features = [tokenize_example(tokenizer, e, cfg.model.max_length) for e in load_examples(cfg.forget)]
    scores, g_norm = difficulty_scores(model, features, tokenizer.pad_token_id, cfg.along, cfg.lr, cfg.seed,
                                       cfg.batch_size)
    write_scores(unit.out_dir / "scores.json", cfg.forget, cfg.seed, scores, g_norm, cfg.along, cfg.lr)
    print(f"   difficulty of {len(scores)} forget rows ({cfg.along}): min {min(scores):.4g}, max {max(scores):.4g}, "
          f"|G| {g_norm:.4g}; written to {unit.out_dir / 'scores.json'}", flush=True)
    return {"n": len(scores), "g_norm": g_norm, "along": cfg.along}


def run_export(unit, resolve) -> dict:
    import shutil

    from safealign.export import export_model

    cfg = unit.config
    out = unit.out_dir / "model"
    shutil.rmtree(out, ignore_errors=True)  # a rerun replaces what an interrupted one left
    export_model(resolve(cfg.model), out, cfg.merge, resolve(cfg.base) if cfg.base else "", cfg.dtype, cfg.max_shard_size)
    print(f"   exported {'the merged model' if cfg.merge else 'the adapter'} to {out}", flush=True)
    return {"path": str(out), "merged": cfg.merge, "files": sorted(p.name for p in out.iterdir())}


RUNNERS = {"train": run_train, "eval": run_eval, "pairs": run_pairs, "generate": run_generate, "prepare": run_prepare,
           "difficulty": run_difficulty, "export": run_export}
