"""call_isolated: a function in a child interpreter, its progress, result, errors and deaths."""

import os

import pytest

from llm_assets.core.errors import PipelineError
from llm_assets.core.isolated import ChildCrashedError, call_isolated


def doubled(on_progress, x):
    on_progress("halfway", x)
    return {"x": x * 2}


def hard_exit(on_progress):
    os._exit(3)


class Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def raises_unpicklable(on_progress):
    raise Unpicklable(1, 2)


def test_result_and_progress_come_back():
    progress = []
    assert call_isolated(doubled, {"x": 21}, "doubling", lambda *a: progress.append(a)) == {"x": 42}
    assert progress == [("halfway", 21)]


def test_a_child_that_exits_without_an_answer_is_named():
    with pytest.raises(ChildCrashedError, match="^hard exit test: the process running it exited with code 3"):
        call_isolated(hard_exit, {}, "hard exit test")


def test_an_exception_that_cannot_cross_arrives_as_its_text():
    with pytest.raises(PipelineError, match="Unpicklable: 1/2"):
        call_isolated(raises_unpicklable, {}, "unpicklable")


def test_functions_the_child_cannot_import_are_refused_before_starting_it():
    def local(on_progress):
        return 1

    with pytest.raises(ValueError, match="module-level function"):
        call_isolated(local, {}, "local")
