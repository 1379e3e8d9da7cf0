"""The mini moderation judge: a small Llama sequence classifier, multi-label over the 14 BeaverTails harm
categories, trained on mini BeaverTails question/answer pairs in the beaver-dam-7b input format. It is used
through exactly the code path of beaver-dam-7b (evals/judges.py)."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from safealign.data.streams import BatchStream
from safealign.evals.judges import MODERATION_FORMAT, ModerationJudge
from safealign.io import read_jsonl
from safealign.loop import TrainConfig, make_accelerator, train
from safealign.methods.base import Method, StepOutput
from safealign.mini.corpus import CATEGORIES, NEGATIVE, POSITIVE

# transformers is imported inside the functions that use it: importing takes seconds that
# commands which never reach them (--dry-run, schema, config errors) should not wait for.

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


class MultiLabelBCE(Method):
    """Binary cross-entropy per category, mean over categories and batch, positives weighted by POS_WEIGHT:
    each category is positive in ~2% of rows, and unweighted the small judge sits at the prior for hundreds
    of steps (measured: 52% test accuracy after 600 steps unweighted, 100% after 150 weighted)."""

    Config = _JudgeLossConfig
    streams = ("train",)

    def step(self, model, streams, step: int) -> StepOutput:
        batch = next(streams["train"])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        pos_weight = torch.full((logits.shape[-1],), POS_WEIGHT, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch["targets"], pos_weight=pos_weight)
        return StepOutput(loss)


VALIDATION_ROWS = 200  # held out of the judge's training rows, for early stopping
TARGET_ACCURACY = 0.98


def train_judge(out: Path, tokenizer, train_file: Path, seed: int, base_dir: Path, max_steps: int = 400) -> dict:
    """Fine-tune the mini base model with a fresh multi-label head, as beaver-dam-7b is Llama-7B fine-tuned
    (measured: a judge trained from scratch reached 50-78% test accuracy over seeds; from the base, 100%).

    Training stops once the judge flags the held-out rows right at TARGET_ACCURACY (checked every 25 steps).
    A fixed length was fragile: the harm categories are learnt one by one, in an order that depends on the
    seed, and with a fixed cosine schedule of 300 steps three seeds ended at 1.00, 0.59 and 0.96 test accuracy.
    Returns {"steps", "validation_accuracy"}."""
    from transformers import LlamaForSequenceClassification

    rows = read_jsonl(train_file)
    train_rows, validation_rows = rows[:-VALIDATION_ROWS], rows[-VALIDATION_ROWS:]
    rng = random.Random(seed + 3)
    features = []
    for q, a, target in judge_examples(train_rows, rng):
        ids = tokenizer(MODERATION_FORMAT.format(question=q, answer=a), truncation=True, max_length=256)["input_ids"]
        features.append({"input_ids": ids, "targets": target})
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification.from_pretrained(
        base_dir, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={c: i for i, c in enumerate(LABELS)},
        problem_type="multi_label_classification", pad_token_id=tokenizer.pad_token_id)
    cfg = TrainConfig(lr=2e-3, max_steps=max_steps, batch_size=32, warmup_ratio=0.05, scheduler="constant",
                      log_every=25, save_every=0)
    stream = BatchStream(features, cfg.batch_size, tokenizer.pad_token_id, seed, collate_fn=collate_judge)
    check = {"validation_accuracy": 0.0}

    def accurate_enough(step: int, model) -> bool:
        check["validation_accuracy"] = flag_accuracy(ModerationJudge.from_loaded(model, tokenizer), validation_rows)
        return check["validation_accuracy"] >= TARGET_ACCURACY

    result = train(model, MultiLabelBCE(_JudgeLossConfig()), {"train": stream}, cfg, out / "_train", make_accelerator(cfg), seed,
                   until=accurate_enough)
    result["model"].save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "_train")
    return {"steps": result["steps"], **check}


def flag_accuracy(judge, rows: list[dict]) -> float:
    """Share of rows where the judge's flag equals `not is_safe`."""
    verdicts = judge.judge([r["prompt"] for r in rows], [" " + r["response"] for r in rows])
    return sum(v["flagged"] == (not r["is_safe"]) for v, r in zip(verdicts, rows)) / len(rows)


def judge_accuracy(judge_dir: Path, test_file: Path) -> float:
    """Share of test rows where the judge's flag equals `not is_safe`: the build's check on the judge."""
    return flag_accuracy(ModerationJudge(str(judge_dir)), read_jsonl(test_file))
