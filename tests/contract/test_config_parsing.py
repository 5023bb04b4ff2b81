"""The same spelling means the same value to infra's stack config and to the trainer's hyperparameters.

Both read settings from strings: Pulumi hands `deepcloud:` values to the program as strings
(infra/config/parsing.py `parse_value`), SageMaker writes every hyperparameter as a string (trainer/config.py
`_parse`). They ship apart (the trainer in its own image) and neither imports the other, so each keeps its own parser;
this test holds them to one set of spellings for booleans and integers, the types both parse. Only the trainer reads
floats (infra has no float setting), so floats are not compared.
"""

from __future__ import annotations

import pytest

from infra.config import ConfigError as InfraConfigError
from infra.config import parse_value
from infra.config.parsing import FALSE, TRUE
from trainer import config as trainer_config
from trainer.errors import ConfigError as TrainerConfigError

REFUSED = "refused"
BOOLEANS = {
    "true": True,
    "TRUE": True,
    "True": True,
    "yes": True,
    "Yes": True,
    "1": True,
    " true ": True,
    "\tyes\n": True,
    "false": False,
    "False": False,
    "NO": False,
    "no": False,
    "0": False,
    " 0 ": False,
    "": REFUSED,
    " ": REFUSED,
    "t": REFUSED,
    "f": REFUSED,
    "y": REFUSED,
    "n": REFUSED,
    "on": REFUSED,
    "off": REFUSED,
    "2": REFUSED,
    "-1": REFUSED,
    "01": REFUSED,
    "1.0": REFUSED,
    "truee": REFUSED,
    "true false": REFUSED,
    "none": REFUSED,
}
INTEGERS = {
    "0": 0,
    "7": 7,
    "007": 7,
    "-3": -3,
    "-0": 0,
    " 42 ": 42,
    "12345678901234567890": 12345678901234567890,
    "": REFUSED,
    " ": REFUSED,
    "+3": REFUSED,
    "1_000": REFUSED,
    "1,000": REFUSED,
    "3.0": REFUSED,
    "1e3": REFUSED,
    "0x10": REFUSED,
    "--3": REFUSED,
    "-": REFUSED,
    "3 4": REFUSED,
    "three": REFUSED,
    "\u00b2": REFUSED,  # a superscript two: str.isdigit() says yes, int() says no
}


def infra_reads(kind: str, text: str) -> object:
    """What the stack config makes of `text` for a setting of `kind` (bool or int), or REFUSED."""
    default = {"bool": False, "int": 0}[kind]
    try:
        return parse_value("someSetting", text, default)
    except InfraConfigError:
        return REFUSED


def trainer_reads(kind: str, text: str) -> object:
    """What the trainer makes of hyperparameter `text` for a field annotated `kind`, or REFUSED."""
    try:
        return trainer_config._parse("some_field", kind, text)
    except TrainerConfigError:
        return REFUSED


CASES = [("bool", text, value) for text, value in BOOLEANS.items()] + [
    ("int", text, value) for text, value in INTEGERS.items()
]


@pytest.mark.parametrize(("kind", "text", "expected"), CASES, ids=[f"{kind}-{text!r}" for kind, text, _ in CASES])
def test_the_same_spelling_reads_alike(kind: str, text: str, expected: object) -> None:
    infra, trainer = infra_reads(kind, text), trainer_reads(kind, text)
    assert infra == trainer, f"{kind} {text!r}: infra reads {infra!r}, the trainer {trainer!r}"
    assert infra == expected
    assert type(infra) is type(expected)


def test_both_rooms_list_the_same_words_for_true_and_false() -> None:
    """The tables behind the spellings above, so a word added to one room's list fails here, not in production."""
    assert set(TRUE) == set(trainer_config._TRUE)
    assert set(FALSE) == set(trainer_config._FALSE)


def test_only_the_trainer_unwraps_json_quoted_values() -> None:
    """The one difference, and it is the transport's, not a spelling's: the SageMaker Python SDK JSON-encodes each
    hyperparameter ("\\"true\\""), which the trainer undoes; Pulumi hands config values over as they were set."""
    assert trainer_reads("bool", '"true"') is True
    assert trainer_reads("int", '"3"') == 3
    assert infra_reads("bool", '"true"') == REFUSED
    assert infra_reads("int", '"3"') == REFUSED
