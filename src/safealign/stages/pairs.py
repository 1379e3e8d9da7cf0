"""The pairs stage: helpful / harmless preference pairs from PKU-SafeRLHF-schema rows, split by prompt."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from safealign.config import opt
from safealign.data import pku_saferlhf
from safealign.data.files import load_rows
from safealign.data.pairs import split_pairs, write_pair_splits


@dataclass
class PairsStage:
    """Preference pairs from PKU-SafeRLHF-schema rows: helpful (chosen = better) and harmless (chosen = safer),
    split by prompt, written as {train,val,test}/{helpful,harmless}_pairs.jsonl in the stage directory
    (later stages read them as 'stage:NAME/train/helpful_pairs.jsonl')."""

    kind: str = opt("pairs", "stage kind")
    path: str = opt("mini:pku_saferlhf", "rows in the PKU-SafeRLHF schema: hub id (PKU-Alignment/PKU-SafeRLHF), "
                                         "local file or directory, or 'mini:pku_saferlhf'")
    split: str = opt("train", "split to read (ignored for a single file)")
    ratios: list[float] = opt([0.8, 0.1, 0.1], "train / val / test shares of the distinct prompts")
    seed: int = opt(-1, "random seed of the prompt split; -1 takes the recipe's seed")

    def paths(self) -> Iterator[tuple[str, str, str]]:
        yield "data", "path", self.path


def run(unit) -> dict:
    cfg: PairsStage = unit.config
    helpful, harmless, stats = pku_saferlhf.pairs(load_rows(cfg.path, cfg.split))
    counts = write_pair_splits(split_pairs(helpful, harmless, cfg.ratios, cfg.seed), unit.out_dir)
    print(f"   {stats['rows']} rows -> {stats['helpful']} helpful and {stats['harmless']} harmless pairs; "
          f"{stats['contradictory']} rows with contradictory safety labels left out of the harmless pairs; "
          f"written to {unit.out_dir}/{{train,val,test}}/{{helpful,harmless}}_pairs.jsonl", flush=True)
    return {"stats": stats, "counts": counts}
