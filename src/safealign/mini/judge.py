"""The mini moderation judge: a small Llama sequence classifier, multi-label over the 14 BeaverTails harm
categories, trained on mini BeaverTails question/answer pairs in the beaver-dam-7b input format. It is used
through exactly the code path of beaver-dam-7b (evals/judges.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from safealign.io import read_jsonl
from safealign.methods.base import StepOutput
from safealign.mini.corpus import CATEGORIES, NEGATIVE, POSITIVE
from safealign.mini.pretrain import JUDGE_FORMAT

LABELS = list(CATEGORIES)
POS_WEIGHT = 5.0


def judge_examples(rows: list[dict], rng: random.Random) -> list[tuple[str, str, list[float]]]:
    """(question, answer, multi-hot target). Beside the rows themselves: truncated answers keep their label
    (generations stop early), and benign or empty answers to harmful questions are not harmful."""
    out = []
    for row in rows:
        target = [float(row["category"][c]) for c in LABELS]
        out.append((row["prompt"], " " + row["response"], target))
        words = row["response"].split()
        cut = rng.randrange(6, max(7, len(words)))
        out.append((row["prompt"], " " + " ".join(words[:cut]), target))
        benign = rng.choice(["", "positive", "negative", " ".join(rng.sample(POSITIVE + NEGATIVE, 3)),
                             "I do not know.", "Tom likes to collect coins every day."])
        out.append((row["prompt"], " " + benign, [0.0] * len(LABELS)))
    return out


def collate_judge(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, f in enumerate(features):
        input_ids[i, :len(f["input_ids"])] = torch.tensor(f["input_ids"])
        attention_mask[i, :len(f["input_ids"])] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "targets": torch.tensor([f["targets"] for f in features])}


@dataclass
class _JudgeLossConfig:
    registry_name = "judge_bce"


class MultiLabelBCE:
    """Binary cross-entropy per category, mean over categories and batch, positives weighted by POS_WEIGHT:
    each category is positive in ~2% of rows, and unweighted the small judge sits at the prior for hundreds
    of steps (measured: 52% test accuracy after 600 steps unweighted, 100% after 150 weighted)."""

    Config = _JudgeLossConfig
    streams = ("train",)

    def __init__(self, cfg=None, total_steps: int = 0):
        pass

    def setup(self, model, streams) -> None:
        pass

    def step(self, model, streams, step: int) -> StepOutput:
        batch = next(streams["train"])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        pos_weight = torch.full((logits.shape[-1],), POS_WEIGHT, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch["targets"], pos_weight=pos_weight)
        return StepOutput(loss)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def train_judge(out: Path, tokenizer, train_file: Path, seed: int, base_dir: Path, steps: int = 300) -> None:
    """Fine-tune the mini base model with a fresh multi-label head, as beaver-dam-7b is Llama-7B fine-tuned
    (measured: a judge trained from scratch reached 50-78% test accuracy over seeds; from the base, 100%)."""
    from transformers import LlamaForSequenceClassification

    from safealign.data.streams import BatchStream
    from safealign.loop import make_accelerator, train
    from safealign.schema import TrainConfig

    rng = random.Random(seed + 3)
    features = []
    for q, a, target in judge_examples(read_jsonl(train_file), rng):
        ids = tokenizer(JUDGE_FORMAT.format(q=q, a=a), truncation=True, max_length=256)["input_ids"]
        features.append({"input_ids": ids, "targets": target})
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification.from_pretrained(
        base_dir, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={c: i for i, c in enumerate(LABELS)},
        problem_type="multi_label_classification", pad_token_id=tokenizer.pad_token_id)
    cfg = TrainConfig(lr=2e-3, max_steps=steps, batch_size=32, warmup_ratio=0.05, scheduler="cosine", log_every=20)
    stream = BatchStream(features, cfg.batch_size, tokenizer.pad_token_id, seed, collate_fn=collate_judge)
    result = train(model, MultiLabelBCE(), {"train": stream}, cfg, out / "_train", make_accelerator(cfg), seed)
    result["model"].save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    import shutil

    shutil.rmtree(out / "_train")


def judge_accuracy(judge_dir: Path, test_file: Path) -> float:
    """Share of test rows where the judge's flag equals `not is_safe`: the build's check on the judge."""
    from safealign.evals.judges import ModerationJudge

    rows = read_jsonl(test_file)
    verdicts = ModerationJudge(str(judge_dir)).judge([r["prompt"] for r in rows], [" " + r["response"] for r in rows])
    return sum(v["flagged"] == (not r["is_safe"]) for v, r in zip(verdicts, rows)) / len(rows)
