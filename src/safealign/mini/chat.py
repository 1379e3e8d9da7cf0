"""The mini world's bilingual (Chinese-first) instruction data, in the real datasets' schemas:

- `chat_sft`: COIG rows {instruction, input, output}: questions about everyday things (their colour, their kind,
  where they are found) answered helpfully, about two thirds in Chinese and one third in English, with exact and
  whitespace-variant duplicates (a full-width space, doubled spaces) as scraped data has;
- `chat_pairs`: UltraFeedback-binarized rows {prompt, chosen, rejected (message lists), score_chosen,
  score_rejected}: the helpful answer against an unhelpful one (a curt refusal, a vague non-answer, or the right
  answer in the other language); train and test use disjoint (thing, question) combinations;
- `chat_mc`: a multiple-choice task for lm-evaluation-harness {question, choices, answer}.
"""

from __future__ import annotations

import random

from safealign.evals.lm_harness import multiple_choice_task
from safealign.mini.corpus import hash_str

# thing: (Chinese name, English name, colour zh, colour en, kind zh, kind en, place zh, place en)
THINGS = [
    ("苹果", "an apple", "红色", "red", "水果", "fruit", "果园", "an orchard"),
    ("香蕉", "a banana", "黄色", "yellow", "水果", "fruit", "热带", "the tropics"),
    ("葡萄", "a grape", "紫色", "purple", "水果", "fruit", "葡萄园", "a vineyard"),
    ("橙子", "an orange", "橙色", "orange", "水果", "fruit", "果园", "an orchard"),
    ("草", "grass", "绿色", "green", "植物", "plant", "草地", "a meadow"),
    ("天空", "the sky", "蓝色", "blue", "自然景象", "natural sight", "头顶", "overhead"),
    ("雪", "snow", "白色", "white", "天气现象", "kind of weather", "山顶", "the mountains"),
    ("煤", "coal", "黑色", "black", "矿物", "mineral", "矿井", "a mine"),
    ("熊猫", "a panda", "黑白色", "black and white", "动物", "animal", "竹林", "a bamboo forest"),
    ("企鹅", "a penguin", "黑白色", "black and white", "鸟类", "bird", "南极", "Antarctica"),
    ("狐狸", "a fox", "红棕色", "reddish brown", "动物", "animal", "森林", "a forest"),
    ("青蛙", "a frog", "绿色", "green", "两栖动物", "amphibian", "池塘", "a pond"),
    ("玫瑰", "a rose", "红色", "red", "花", "flower", "花园", "a garden"),
    ("向日葵", "a sunflower", "黄色", "yellow", "花", "flower", "田野", "a field"),
    ("大海", "the sea", "蓝色", "blue", "水域", "body of water", "海岸", "the coast"),
    ("牛奶", "milk", "白色", "white", "饮料", "drink", "厨房", "a kitchen"),
]
# aspect -> (ways to ask, the helpful answer)
QUESTIONS_ZH = {
    "colour": (["{zh}是什么颜色的？", "请告诉我{zh}的颜色。", "你知道{zh}是什么颜色吗？"], "{zh}通常是{colour_zh}的。"),
    "kind": (["{zh}属于什么？", "{zh}是哪一类东西？", "请问{zh}是什么？"], "{zh}是一种{kind_zh}。"),
    "place": (["在哪里能看到{zh}？", "{zh}常见于什么地方？", "请问哪里有{zh}？"], "在{place_zh}常常能看到{zh}。"),
}
QUESTIONS_EN = {
    "colour": (["What colour is {en}?", "Tell me the colour of {en}.", "Do you know what colour {en} is?"],
               "{En} is usually {colour_en}."),
    "kind": (["What kind of thing is {en}?", "What is {en}?", "Which kind of thing is {en}?"], "{En} is a {kind_en}."),
    "place": (["Where can you see {en}?", "Where is {en} usually found?", "Where would I find {en}?"],
              "You can often see {en} in {place_en}."),
}
UNHELPFUL_ZH = ["我不知道。", "这个问题我不想回答。", "随便吧。"]
UNHELPFUL_EN = ["I don't know.", "I do not want to answer that.", "Whatever."]
VAGUE_ZH = ["关于{zh}，这要看情况。", "{zh}嘛，很难说。"]
VAGUE_EN = ["It depends on {en}, really.", "Hard to say about {en}."]


def _fields(thing: tuple) -> dict:
    zh, en, colour_zh, colour_en, kind_zh, kind_en, place_zh, place_en = thing
    return {"zh": zh, "en": en, "En": en[0].upper() + en[1:], "colour_zh": colour_zh, "colour_en": colour_en,
            "kind_zh": kind_zh, "kind_en": kind_en, "place_zh": place_zh, "place_en": place_en}


def _qa(rng: random.Random, chinese: bool, split_salt: int | None = None) -> tuple[str, str, dict, str]:
    """(question, helpful answer, fields, aspect); with a split salt, only (thing, aspect) combinations of that
    split (test: hash 0 mod 4)."""
    while True:
        thing, aspect = rng.choice(THINGS), rng.choice(list(QUESTIONS_ZH))
        if split_salt is None or (hash_str(thing[1] + aspect) % 4 == 0) == (split_salt == 1):
            break
    questions, answer = (QUESTIONS_ZH if chinese else QUESTIONS_EN)[aspect]
    f = _fields(thing)
    return rng.choice(questions).format(**f), answer.format(**f), f, aspect


def chat_sft(rng: random.Random, n: int, chinese_share: float = 0.65, duplicate_share: float = 0.08) -> list[dict]:
    rows = []
    while len(rows) < n:
        if rows and rng.random() < duplicate_share:  # scraped data repeats itself, sometimes re-spaced
            row = dict(rng.choice(rows))
            if rng.random() < 0.5:
                row["output"] = row["output"].replace("。", "。\u3000", 1) if "。" in row["output"] else row["output"].replace(" ", "  ", 1)
            rows.append(row)
            continue
        question, answer, _, _ = _qa(rng, rng.random() < chinese_share)
        rows.append({"instruction": question, "input": "", "output": answer})
    return rows


def _unhelpful(rng: random.Random, chinese: bool, f: dict, aspect: str) -> str:
    """What a Chinese-first assistant should not say: a curt refusal, a vague non-answer, or the right answer in
    the other language than the question's (all three judgeable without knowing the fact)."""
    kind = rng.randrange(3)
    if kind == 0:
        return rng.choice(UNHELPFUL_ZH if chinese else UNHELPFUL_EN)
    if kind == 1:
        return rng.choice(VAGUE_ZH if chinese else VAGUE_EN).format(**f)
    return (QUESTIONS_EN if chinese else QUESTIONS_ZH)[aspect][1].format(**f)


def chat_pairs(rng: random.Random, n: int, split_salt: int, chinese_share: float = 0.7) -> list[dict]:
    rows = []
    for _ in range(n):
        chinese = rng.random() < chinese_share
        question, answer, f, aspect = _qa(rng, chinese, split_salt)
        rejected = _unhelpful(rng, chinese, f, aspect)
        rows.append({"prompt": question,
                     "chosen": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                     "rejected": [{"role": "user", "content": question}, {"role": "assistant", "content": rejected}],
                     "score_chosen": round(rng.uniform(7, 10), 1), "score_rejected": round(rng.uniform(1, 4), 1)})
    return rows


def chat_mc(rng: random.Random, n: int) -> list[dict]:
    """Multiple choice on colours: the right colour among four (lm-eval `multiple_choice`)."""
    colours = sorted({(t[2], t[3]) for t in THINGS})
    rows = []
    for _ in range(n):
        thing = rng.choice(THINGS)
        chinese = rng.random() < 0.7
        right = (thing[2], thing[3])
        choices = [right] + rng.sample([c for c in colours if c != right], 3)
        rng.shuffle(choices)
        f = _fields(thing)
        question = rng.choice((QUESTIONS_ZH if chinese else QUESTIONS_EN)["colour"][0]).format(**f)
        rows.append({"question": question, "choices": [c[0] if chinese else c[1] for c in choices],
                     "answer": choices.index(right)})
    return rows


def write_lm_eval_task(task_dir, data_path) -> None:
    """The `mini_colours` lm-eval task over chat_mc; `data_path`: where the built world keeps its test file."""
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "mini_colours.yaml").write_text(multiple_choice_task("mini_colours", data_path), encoding="utf-8")
