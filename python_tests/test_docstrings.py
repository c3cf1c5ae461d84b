"""The docstring examples of the ops and the rules run as tests (they are what users copy)."""
import doctest

import pytest
import torch

import robustagg.ops as ops
from robustagg.aggregators import base, distance, mean, order, sign, stats


def test_ops_docstring_examples_run_as_written():
    result = doctest.testmod(ops, extraglobs={"torch": torch, "ops": ops},
                             optionflags=doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.parametrize("module", [base, distance, mean, order, sign, stats], ids=lambda m: m.__name__)
def test_rule_docstring_examples_run_as_written(module):
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.NORMALIZE_WHITESPACE,
                             report=True)
    assert result.failed == 0
