"""compose(): layers run outermost first, and a layer whose ``applies(spec)`` is False for the
call's function is stepped over (the built-in layers that use it keep their behaviour)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel

from shared.registry.resolver import DeprecationMiddleware
from shared.runtime.credentials import CredentialsMiddleware
from shared.runtime.middleware import Call, CallNext, InputValidationMiddleware, compose
from shared.validation import SchemaValidationMiddleware
from tests.unit.test_timeout_middleware import make_call


class Recording:
    def __init__(self, name: str, seen: list[str], *, only_deprecated: bool = False) -> None:
        self.name, self.seen, self.only_deprecated = name, seen, only_deprecated
        if only_deprecated:
            self.applies = lambda spec: spec.is_deprecated

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        self.seen.append(self.name)
        return await call_next(call)


async def test_layers_that_do_not_apply_are_stepped_over() -> None:
    seen: list[str] = []
    chain = compose(
        [Recording("outer", seen), Recording("picky", seen, only_deprecated=True), Recording("inner", seen)]
    )
    call = make_call(5)
    await chain(call)
    assert seen == ["outer", "inner"]

    seen.clear()
    call.spec = dataclasses.replace(call.spec, is_deprecated=True)
    await chain(call)
    assert seen == ["outer", "picky", "inner"]


class Model(BaseModel):
    n: int


def test_built_in_layers_say_which_functions_they_apply_to() -> None:
    spec = make_call(5).spec
    assert not InputValidationMiddleware.applies(spec)
    assert InputValidationMiddleware.applies(dataclasses.replace(spec, input_model=Model))
    assert not CredentialsMiddleware.applies(spec)
    assert CredentialsMiddleware.applies(dataclasses.replace(spec, credentials=("KEY",)))
    assert CredentialsMiddleware.applies(dataclasses.replace(spec, optional_credentials=("KEY",)))
    assert not DeprecationMiddleware.applies(spec)
    assert DeprecationMiddleware.applies(dataclasses.replace(spec, is_deprecated=True))
    # JSON Schema: a built-in's input is checked by its model; a registered function's is not.
    builtin = dataclasses.replace(spec, input_model=Model, input_schema=Model.model_json_schema())
    assert not SchemaValidationMiddleware.applies(builtin)
    assert SchemaValidationMiddleware.applies(dataclasses.replace(builtin, output_schema={"type": "object"}))
    registered = dataclasses.replace(spec, execution_type="http", input_schema={"type": "object"})
    assert SchemaValidationMiddleware.applies(registered)
