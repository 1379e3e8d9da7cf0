"""Chat and preference datasets for instruction tuning, turned into our two record kinds:

    sft:   {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...], "source": NAME}
    pairs: {"prompt": str, "chosen": str, "rejected": str, "source": NAME}

`CHAT_SOURCES` maps a name to (kind, adapter); an adapter is `adapter(rows, on_error) -> (records, n_skipped)`.
Most sources convert one row into one record (`coig(rows, i)`, wrapped by `per_row`); oasst1 builds
conversations from a message tree. A malformed row is a DataError naming `file:line` and the field; with
on_error="skip" it is skipped and counted instead, never dropped silently.
"""

from __future__ import annotations

from typing import Any, Callable

from safealign.config import one_of
from safealign.data.common import require
from safealign.data.files import Rows, load_rows
from safealign.errors import DataError

ROLES = ("system", "user", "assistant")
ON_ERROR = ("raise", "skip")
Adapter = Callable[[Rows, str], tuple[list[dict], int]]


# ---------------------------------------------------------------------------------------------- row checks


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(rows: Rows, i: int, name: str) -> str:
    value = require(rows, i, (name,))[name]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{rows.where(i)}: field '{name}' must be a non-empty string, got {_show(value)}")
    return value


def _optional_text(rows: Rows, i: int, name: str) -> str:
    value = rows.rows[i].get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{rows.where(i)}: field '{name}' must be a string, got {_show(value)}")
    return value


def _choice(rows: Rows, i: int, name: str) -> int:
    value = require(rows, i, (name,))[name]
    # exactly int: True or 1.0 would pass `in (0, 1)` and pick a side by accident
    if type(value) is not int or value not in (0, 1):
        raise DataError(f"{rows.where(i)}: field '{name}' must be 0 or 1, got {_show(value)}")
    return value


def _sft(messages: list[dict], source: str) -> dict:
    return {"messages": messages, "source": source}


def _pair(prompt: str, chosen: str, rejected: str, source: str) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source}


def per_row(convert: Callable[[Rows, int], dict]) -> Adapter:
    """An adapter from a one-row converter: a row that raises DataError is re-raised or, with on_error="skip",
    skipped and counted."""

    def adapter(rows: Rows, on_error: str) -> tuple[list[dict], int]:
        records, skipped = [], 0
        for i in range(len(rows)):
            try:
                records.append(convert(rows, i))
            except DataError:
                if on_error == "raise":
                    raise
                skipped += 1
        return records, skipped

    return adapter


# ---------------------------------------------------------------------------------------------- sft sources


def _instruction(rows: Rows, i: int, source: str) -> dict:
    """instruction/input/output -> user: the instruction, then a blank line and the input when there is one
    (a missing or null `input` is an empty one); assistant: the output."""
    instruction, extra = _text(rows, i, "instruction"), _optional_text(rows, i, "input")
    output = _text(rows, i, "output")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return _sft([{"role": "user", "content": user}, {"role": "assistant", "content": output}], source)


def coig(rows: Rows, i: int) -> dict:
    """BAAI/COIG (instruction, input, output)."""
    return _instruction(rows, i, "coig")


def coig_pc(rows: Rows, i: int) -> dict:
    """BAAI/COIG-PC-core (instruction, input, output; task_type, domain, ... unused)."""
    return _instruction(rows, i, "coig_pc")


def messages(rows: Rows, i: int) -> dict:
    """Rows already in our SFT format: `messages`, a non-empty list of {role, content} with roles
    system/user/assistant and non-empty content, ending with the assistant's message (the training target).
    Any `source` in the row is replaced by "messages": records name the adapter they came through."""
    turns = require(rows, i, ("messages",))["messages"]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{rows.where(i)}: field 'messages' must be a non-empty list, got {_show(turns)}")
    out = []
    for k, m in enumerate(turns):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            got = m.get("role") if isinstance(m, dict) else m
            raise DataError(f"{rows.where(i)}: field 'messages[{k}].role' must be one of {', '.join(ROLES)}, got {_show(got)}")
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"{rows.where(i)}: field 'messages[{k}].content' must be a non-empty string, got {_show(content)}")
        out.append({"role": m["role"], "content": content})
    if out[-1]["role"] != "assistant":
        raise DataError(f"{rows.where(i)}: field 'messages': the last message must be the assistant's, got '{out[-1]['role']}'")
    return _sft(out, "messages")


OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def oasst1(rows: Rows, on_error: str) -> tuple[list[dict], int]:
    """OpenAssistant/oasst1: one row per message (message_id, parent_id, role prompter|assistant, text, lang,
    rank; parent_id is null at a tree's root), so conversations are paths in the message trees.

    Rule: every assistant message whose rank is 0 or null (null: it had no sibling to be ranked against)
    ends one conversation, the path from the root prompter message down to it, provided every other
    assistant message on that path is also rank 0 or null. So all assistant turns of a conversation are
    the best-ranked replies, and a thread with k best-ranked assistant turns gives k conversations (each
    a prefix of the next, each ending in its own target). A row with a bad field, or an assistant message
    whose ancestors cannot be found (a parent_id not in the file, a cycle, a root that is not a prompter),
    is malformed."""
    index, skipped = {}, 0  # message_id -> row index of the well-formed messages
    for i in range(len(rows)):
        try:
            index[_oasst_message(rows, i)] = i
        except DataError:
            if on_error == "raise":
                raise
            skipped += 1
    records = []
    for i in index.values():
        if rows.rows[i]["role"] != "assistant" or not _top_ranked(rows.rows[i]):
            continue
        try:
            path = _oasst_path(rows, i, index)
        except DataError:
            if on_error == "raise":
                raise
            skipped += 1
            continue
        if all(_top_ranked(rows.rows[j]) for j in path if rows.rows[j]["role"] == "assistant"):
            records.append(_sft([{"role": OASST_ROLES[rows.rows[j]["role"]], "content": rows.rows[j]["text"]}
                                 for j in path], "oasst1"))
    return records, skipped


def _top_ranked(row: dict) -> bool:
    return row.get("rank") in (0, None)


def _oasst_message(rows: Rows, i: int) -> str:
    """Check one message row; its message_id."""
    message_id = _text(rows, i, "message_id")
    row = rows.rows[i]
    if "parent_id" not in row:
        raise DataError(f"{rows.where(i)}: missing field 'parent_id' (null at a tree's root)")
    if row["parent_id"] is not None and not isinstance(row["parent_id"], str):
        raise DataError(f"{rows.where(i)}: field 'parent_id' must be a string or null, got {_show(row['parent_id'])}")
    role = require(rows, i, ("role",))["role"]
    if role not in OASST_ROLES:
        raise DataError(f"{rows.where(i)}: field 'role' must be one of {', '.join(OASST_ROLES)}, got {_show(role)}")
    _text(rows, i, "text")
    rank = row.get("rank")
    if rank is not None and (type(rank) is not int or rank < 0):
        raise DataError(f"{rows.where(i)}: field 'rank' must be a non-negative integer or null, got {_show(rank)}")
    return message_id


def _oasst_path(rows: Rows, i: int, index: dict[str, int]) -> list[int]:
    """Row indices from the root down to row i."""
    path = [i]
    while rows.rows[path[-1]]["parent_id"] is not None:
        parent = rows.rows[path[-1]]["parent_id"]
        if parent not in index:
            raise DataError(f"{rows.where(i)}: field 'parent_id': ancestor message '{parent}' not found (or malformed)")
        if len(path) > len(index):
            raise DataError(f"{rows.where(i)}: field 'parent_id': the ancestors form a cycle")
        path.append(index[parent])
    if rows.rows[path[-1]]["role"] != "prompter":
        raise DataError(f"{rows.where(i)}: field 'role': the thread root {rows.where(path[-1])} is not a prompter message")
    return path[::-1]


# ---------------------------------------------------------------------------------------------- pair sources


def shp(rows: Rows, i: int) -> dict:
    """stanfordnlp/SHP: history (the post), human_ref_A, human_ref_B, labels (1: A is preferred, 0: B)."""
    prompt, a, b = _text(rows, i, "history"), _text(rows, i, "human_ref_A"), _text(rows, i, "human_ref_B")
    chosen, rejected = (a, b) if _choice(rows, i, "labels") == 1 else (b, a)
    return _pair(prompt, chosen, rejected, "shp")


def ultrafeedback(rows: Rows, i: int) -> dict:
    """HuggingFaceH4/ultrafeedback_binarized: prompt, and chosen / rejected as message lists ending with the
    answer; the responses are the content of the last assistant message of each list."""
    return _pair(_text(rows, i, "prompt"), _last_assistant(rows, i, "chosen"), _last_assistant(rows, i, "rejected"),
                 "ultrafeedback")


def _last_assistant(rows: Rows, i: int, name: str) -> str:
    turns = require(rows, i, (name,))[name]
    if not isinstance(turns, list):
        raise DataError(f"{rows.where(i)}: field '{name}' must be a list of messages, got {_show(turns)}")
    for m in reversed(turns):
        if isinstance(m, dict) and m.get("role") == "assistant":
            if not isinstance(m.get("content"), str) or not m["content"].strip():
                raise DataError(f"{rows.where(i)}: field '{name}': the last assistant message has no text")
            return m["content"]
    raise DataError(f"{rows.where(i)}: field '{name}' has no assistant message")


HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def hh_rlhf(rows: Rows, i: int) -> dict:
    """Anthropic/hh-rlhf: chosen and rejected are whole transcripts "\\n\\nHuman: ...\\n\\nAssistant: ...",
    identical up to the last Assistant turn. The responses are the text after the last "\\n\\nAssistant:";
    the prompt is the shared text before it. A single-turn prompt loses its "Human:" marker (it becomes the
    user's message as is); a multi-turn prompt keeps the transcript markers, since a pair has one prompt string.
    Transcripts that differ before the last Assistant turn are malformed."""
    prompt, chosen = _split_last_turn(rows, i, "chosen")
    prompt_r, rejected = _split_last_turn(rows, i, "rejected")
    if prompt != prompt_r:
        raise DataError(f"{rows.where(i)}: fields 'chosen' and 'rejected' differ before the last Assistant turn")
    if prompt.count(HUMAN) == 1 and prompt.startswith(HUMAN) and ASSISTANT not in prompt:
        prompt = prompt[len(HUMAN):]
    if not prompt.strip():
        raise DataError(f"{rows.where(i)}: field 'chosen': no Human turn before the last Assistant turn")
    return _pair(prompt.strip(), chosen, rejected, "hh_rlhf")


def _split_last_turn(rows: Rows, i: int, name: str) -> tuple[str, str]:
    text = _text(rows, i, name)
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise DataError(f"{rows.where(i)}: field '{name}' has no '\\n\\nAssistant:' turn")
    response = text[cut + len(ASSISTANT):].strip()
    if not response:
        raise DataError(f"{rows.where(i)}: field '{name}': the last Assistant turn is empty")
    return text[:cut], response


def pku_saferlhf(rows: Rows, i: int) -> dict:
    """PKU-Alignment/PKU-SafeRLHF: prompt, response_0, response_1, better_response_id (the helpfulness
    preference; safety labels are unused here - the safety pairs live in safealign.data.pku_saferlhf)."""
    responses = (_text(rows, i, "response_0"), _text(rows, i, "response_1"))
    better = _choice(rows, i, "better_response_id")
    return _pair(_text(rows, i, "prompt"), responses[better], responses[1 - better], "pku_saferlhf")


def pairs(rows: Rows, i: int) -> dict:
    """Rows already in our pairs format (prompt, chosen, rejected); other fields are dropped."""
    return _pair(_text(rows, i, "prompt"), _text(rows, i, "chosen"), _text(rows, i, "rejected"), "pairs")


CHAT_SOURCES: dict[str, tuple[str, Adapter]] = {
    "oasst1": ("sft", oasst1),
    "coig": ("sft", per_row(coig)),
    "coig_pc": ("sft", per_row(coig_pc)),
    "messages": ("sft", per_row(messages)),
    "shp": ("pairs", per_row(shp)),
    "ultrafeedback": ("pairs", per_row(ultrafeedback)),
    "hh_rlhf": ("pairs", per_row(hh_rlhf)),
    "pku_saferlhf": ("pairs", per_row(pku_saferlhf)),
    "pairs": ("pairs", per_row(pairs)),
}


def source_kind(name: str, where: str = "source") -> str:
    """'sft' or 'pairs'; an unknown name is a ConfigError naming the closest one."""
    one_of(name, tuple(CHAT_SOURCES), where)
    return CHAT_SOURCES[name][0]


def read_source(name: str, path: str, split: str, on_error: str = "raise") -> tuple[list[dict], int]:
    """(records, n_skipped) of source `name` read from `path` [split] with `load_rows`. on_error="raise":
    the first malformed row is a DataError naming `file:line` and the field; "skip": malformed rows are left
    out and counted in n_skipped."""
    source_kind(name)
    one_of(on_error, ON_ERROR, "on_error")
    return CHAT_SOURCES[name][1](load_rows(path, split), on_error)

