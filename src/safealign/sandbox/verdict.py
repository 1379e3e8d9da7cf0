"""The verdict, decided in our process from values, never by the code under test.

A test script is split into jobs for the worker: each top-level `assert` becomes one evaluation per operand that
is not a literal (`assert f(2, 3) == 5` sends `f(2, 3)` only; the 5 never leaves this process), every other
statement runs in the worker as written. The worker sends back each value's repr; `ast.literal_eval` turns it
into a plain Python value (a repr that is not a literal, as an always-equal object's, is a failure) and the
comparison runs here. So a candidate cannot pass a test by exiting early (its values are missing), by hooks
that run at exit, by objects that claim equality, or by reading the tests: it never sees an expected value.
The price: a value that is not a plain literal (an instance of the code's own class, say) cannot be compared and
fails its test, also when it would be equal; the tests in our data compare calls with literals. What runs in
the worker is visible to a candidate that reads its interpreter's frames and objects: asserts nested in loops or
functions, and values that setup statements compute (`expected = 5` then `assert f() == expected`). Top-level
asserts against literals, the form of every test in our data, are immune.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}
_NOT_COMPUTED = object()


@dataclass
class Check:
    """One top-level assert: `operands[i]` is a literal's value, or a job index whose value the worker sends."""
    line: int
    operands: list  # ("literal", value) | ("job", index)
    ops: list  # comparison functions between consecutive operands; empty = the one operand must be truthy


class UnparsableTests(ValueError):
    pass


def plan(tests: str) -> tuple[list[tuple[str, str]], list[Check]]:
    """Jobs for the worker, in order ("exec" | "eval", source), and the checks this process decides."""
    try:
        tree = ast.parse(tests)
    except SyntaxError as error:
        raise UnparsableTests(f"the tests do not parse: line {error.lineno}: {error.msg}") from None
    jobs, checks = [], []

    def operand(node):
        try:
            return ("literal", ast.literal_eval(node))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            jobs.append(("eval", ast.unparse(node)))
            return ("job", len(jobs) - 1)

    for statement in tree.body:
        if not isinstance(statement, ast.Assert):
            jobs.append(("exec", ast.unparse(statement)))
            continue
        test = statement.test
        ops = [type(op) for op in test.ops] if isinstance(test, ast.Compare) and all(
            type(op) in _COMPARE for op in test.ops) else []
        nodes = [test.left, *test.comparators] if ops else [test]
        checks.append(Check(statement.lineno, [operand(n) for n in nodes], [_COMPARE[o] for o in ops]))
    return jobs, checks


_NON_FINITE = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}  # reprs literal_eval refuses


def _value(text):
    if text in _NON_FINITE:
        return _NON_FINITE[text]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NOT_COMPUTED


def decide(checks: list[Check], values: dict[int, str]) -> str | None:
    """None when every check holds, else the reason of the first that does not."""
    for check in checks:
        resolved = []
        for kind, content in check.operands:
            if kind == "literal":
                resolved.append(content)
                continue
            if content not in values:
                return f"failed: line {check.line} was never evaluated"
            value = _value(values[content])
            if value is _NOT_COMPUTED:
                return f"failed: line {check.line} gave {values[content][:80]!r}, not a plain value"
            resolved.append(value)
        try:
            holds = (all(op(a, b) for op, a, b in zip(check.ops, resolved, resolved[1:])) if check.ops
                     else bool(resolved[0]))
        except Exception:  # plain values only, so e.g. `1 < "a"`: a failed test, not our crash
            holds = False
        if not holds:
            return f"failed: line {check.line}"
    return None
