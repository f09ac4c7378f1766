"""What the simulated relative does with each call, in order: `--script answer:3,decline`.

- `answer:N` answers after N seconds (0 allowed), talks until the agent ends the call;
- `decline` declines at once;
- `ignore` lets it ring out (the app reports `timeout` when the ring time has passed);
- `manual` waits for a person: `callpanion phone answer|decline` (else it rings out);
- `offline` goes offline before the next call: its tokens die at the providers (as when
  the app is uninstalled) and it hears nothing more.
When the script is used up, every further call gets the last behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["answer", "decline", "ignore", "manual", "offline"]
KINDS: tuple[Kind, ...] = ("answer", "decline", "ignore", "manual", "offline")
#: Longest scripted wait before answering (a ring lasts at most 120 s anyway).
MAX_ANSWER_DELAY_S = 120.0


@dataclass(frozen=True)
class Behaviour:
    """One call's behaviour."""

    kind: Kind
    delay_s: float = 0.0

    def __str__(self) -> str:
        return f"answer:{self.delay_s:g}" if self.kind == "answer" else self.kind


def parse_script(text: str) -> list[Behaviour]:
    """`answer:2,ignore,decline` -> behaviours; ValueError naming the bad step and why."""
    steps: list[Behaviour] = []
    for position, raw in enumerate(text.split(","), start=1):
        word, _, argument = raw.strip().partition(":")
        if word not in KINDS:
            raise ValueError(
                f"script step {position} ({raw.strip()!r}): must be one of "
                "answer:N, decline, ignore, manual, offline"
            )
        if word == "answer":
            try:
                delay = float(argument or "0")
            except ValueError:
                raise ValueError(
                    f"script step {position} ({raw.strip()!r}): N must be seconds"
                ) from None
            if not 0 <= delay <= MAX_ANSWER_DELAY_S:
                raise ValueError(
                    f"script step {position}: N must be between 0 and {MAX_ANSWER_DELAY_S:g} s"
                )
            steps.append(Behaviour("answer", delay))
        elif argument:
            raise ValueError(f"script step {position} ({raw.strip()!r}): {word} takes no N")
        else:
            steps.append(Behaviour(word))
    return steps
