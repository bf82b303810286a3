"""Request/response models of the serving HTTP API (one request kind and answer per task).

The request model is strict: exactly one of ``text`` / ``texts``, no unknown fields, no type
coercion, no empty or whitespace-only text, and per-deployment limits on text length and list
size. The limits come from the serve config, so the concrete model is made by
:func:`request_model`; :class:`PredictRequest` itself carries the default limits.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from raynlp.config import ServeSection

DEFAULT_LIMITS = ServeSection()


def text_problem(text: str, max_chars: int) -> str | None:
    """Why ``text`` cannot be predicted (blank, too long, invalid Unicode), else None.

    Unpaired surrogates (``"\\ud800"`` is valid JSON) would make the tokenizer raise.
    """
    if not text.strip():
        return "must not be empty or whitespace only"
    if len(text) > max_chars:
        return f"has {len(text)} characters; the limit is {max_chars}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"is not valid Unicode (unpaired surrogate at character {err.start})"
    return None


class PredictRequest(BaseModel):
    """``{"text": "..."}`` for one answer or ``{"texts": ["...", ...]}`` for a list of answers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_text_chars: ClassVar[int] = DEFAULT_LIMITS.max_text_chars
    max_items: ClassVar[int] = DEFAULT_LIMITS.max_items

    text: StrictStr | None = Field(None, description="One text; the answer is one prediction.")
    texts: list[StrictStr] | None = Field(
        None, description="Several texts; the answer is a list of predictions in the same order."
    )

    @field_validator("text", "texts", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null; leave the field out instead")
        return value

    @field_validator("text")
    @classmethod
    def _text_ok(cls, value: str) -> str:
        problem = text_problem(value, cls.max_text_chars)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("texts")
    @classmethod
    def _texts_ok(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must hold at least one text")
        if len(value) > cls.max_items:
            raise ValueError(f"has {len(value)} items; the limit is {cls.max_items}")
        for index, text in enumerate(value):
            problem = text_problem(text, cls.max_text_chars)
            if problem:
                raise ValueError(f"item {index} {problem}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) or 'texts' (a list of strings)")
        return self

    @property
    def is_single(self) -> bool:
        """True for a ``text`` request (answer is one object), False for ``texts`` (a list)."""
        return self.text is not None

    def all_texts(self) -> list[str]:
        """The request's texts as a list (one element for a ``text`` request)."""
        return [self.text] if self.text is not None else list(self.texts or [])

    def items(self) -> list[dict[str, str]]:
        return [{"text": text} for text in self.all_texts()]


def request_model(max_text_chars: int, max_items: int) -> type[PredictRequest]:
    """A :class:`PredictRequest` subclass enforcing these limits (same fields and rules)."""
    if max_text_chars < 1 or max_items < 1:
        raise ValueError("max_text_chars and max_items must be >= 1")

    class LimitedPredictRequest(PredictRequest):
        __doc__ = PredictRequest.__doc__
        model_config = ConfigDict(title="PredictRequest")

    LimitedPredictRequest.max_text_chars = max_text_chars
    LimitedPredictRequest.max_items = max_items
    return LimitedPredictRequest


class PairItem(BaseModel):
    """Two texts to compare."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: StrictStr = Field(description="First sentence.")
    text_pair: StrictStr = Field(description="Second sentence.")


class QaItem(BaseModel):
    """A question about a context; the answer is a span of the context."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: StrictStr
    context: StrictStr


def _check_fields(item: BaseModel, max_chars: int, where: str = "") -> None:
    for name, value in item.model_dump().items():
        problem = text_problem(value, max_chars)
        if problem:
            raise ValueError(f"{where}{name} {problem}")


class PairRequest(BaseModel):
    """``{"text": "...", "text_pair": "..."}`` for one score or ``{"pairs": [{...}, ...]}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_text_chars: ClassVar[int] = DEFAULT_LIMITS.max_text_chars
    max_items: ClassVar[int] = DEFAULT_LIMITS.max_items

    text: StrictStr | None = None
    text_pair: StrictStr | None = None
    pairs: list[PairItem] | None = Field(None, description="Several pairs; answers in order.")

    @model_validator(mode="after")
    def _valid(self) -> PairRequest:
        single = self.text is not None or self.text_pair is not None
        if single == (self.pairs is not None):
            raise ValueError(
                "give either 'text' and 'text_pair' (one pair) or 'pairs' (a list of pairs)"
            )
        if single and (self.text is None or self.text_pair is None):
            raise ValueError("a pair needs both 'text' and 'text_pair'")
        if self.pairs is not None and not self.pairs:
            raise ValueError("'pairs' must hold at least one pair")
        if self.pairs is not None and len(self.pairs) > self.max_items:
            raise ValueError(f"'pairs' has {len(self.pairs)} items; the limit is {self.max_items}")
        for index, item in enumerate(self.items()):
            _check_fields(
                PairItem(**item), self.max_text_chars, "" if single else f"pairs.{index}."
            )
        return self

    @property
    def is_single(self) -> bool:
        return self.pairs is None

    def items(self) -> list[dict[str, str]]:
        if self.pairs is None:
            return [{"text": str(self.text), "text_pair": str(self.text_pair)}]
        return [p.model_dump() for p in self.pairs]


class QaRequest(BaseModel):
    """``{"question": "...", "context": "..."}`` for one answer or ``{"inputs": [{...}, ...]}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_text_chars: ClassVar[int] = DEFAULT_LIMITS.max_text_chars
    max_items: ClassVar[int] = DEFAULT_LIMITS.max_items

    question: StrictStr | None = None
    context: StrictStr | None = None
    inputs: list[QaItem] | None = Field(None, description="Several questions; answers in order.")

    @model_validator(mode="after")
    def _valid(self) -> QaRequest:
        single = self.question is not None or self.context is not None
        if single == (self.inputs is not None):
            raise ValueError(
                "give either 'question' and 'context' (one question) or 'inputs' (a list of them)"
            )
        if single and (self.question is None or self.context is None):
            raise ValueError("a question needs both 'question' and 'context'")
        if self.inputs is not None and not self.inputs:
            raise ValueError("'inputs' must hold at least one question")
        if self.inputs is not None and len(self.inputs) > self.max_items:
            raise ValueError(
                f"'inputs' has {len(self.inputs)} items; the limit is {self.max_items}"
            )
        for index, item in enumerate(self.items()):
            _check_fields(QaItem(**item), self.max_text_chars, "" if single else f"inputs.{index}.")
        return self

    @property
    def is_single(self) -> bool:
        return self.inputs is None

    def items(self) -> list[dict[str, str]]:
        if self.inputs is None:
            return [{"question": str(self.question), "context": str(self.context)}]
        return [i.model_dump() for i in self.inputs]


REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "text": PredictRequest,
    "pair": PairRequest,
    "qa": QaRequest,
}


def request_model_for(kind: str, max_text_chars: int, max_items: int) -> type[BaseModel]:
    """The request model of a task's ``request_kind`` with these limits."""
    base = REQUEST_MODELS[kind]
    if max_text_chars < 1 or max_items < 1:
        raise ValueError("max_text_chars and max_items must be >= 1")
    limited = type(
        f"Limited{base.__name__}",
        (base,),
        {"__doc__": base.__doc__, "model_config": ConfigDict(title=base.__name__)},
    )
    limited.max_text_chars = max_text_chars
    limited.max_items = max_items
    return limited


class Prediction(BaseModel):
    """One classification answer."""

    label: str = Field(description="The most probable class.")
    score: float = Field(description="Probability of `label`.")
    scores: dict[str, float] = Field(description="Probability of every class.")
    truncated: bool = Field(description="True when the text filled the token window (maybe cut).")


class Entity(BaseModel):
    text: str = Field(description="The entity as it appears in the input.")
    type: str = Field(description="Entity type, e.g. PER, ORG, LOC, MISC.")
    start: int = Field(description="Character offset of the first character.")
    end: int = Field(description="Character offset after the last character.")
    score: float = Field(description="Mean probability of the entity's word tags.")


class EntitiesPrediction(BaseModel):
    """Named entities of one text."""

    entities: list[Entity]
    truncated: bool = Field(description="True when words beyond the token window were not tagged.")


class AnswerPrediction(BaseModel):
    """The answer span of one question."""

    answer: str = Field(description="Answer text ('' when no span qualifies).")
    start: int = Field(description="Character offset of the answer in the context.")
    end: int
    score: float = Field(description="Probability of the span (start × end).")
    truncated: bool = False


class SimilarityPrediction(BaseModel):
    score: float = Field(description="Predicted similarity on the training labels' scale.")
    truncated: bool


class SummaryPrediction(BaseModel):
    summary: str
    truncated: bool = Field(description="True when the document was cut to the token window.")


RESPONSE_MODELS: dict[str, type[BaseModel]] = {
    "classification": Prediction,
    "ner": EntitiesPrediction,
    "qa": AnswerPrediction,
    "similarity": SimilarityPrediction,
    "summarization": SummaryPrediction,
}


class HealthResponse(BaseModel):
    status: str = "ok"


class ErrorItem(BaseModel):
    field: str = Field(description="Dotted location of the problem, e.g. 'texts' or 'body'.")
    message: str


class ErrorResponse(BaseModel):
    """Body of every 4xx answer produced by request validation."""

    message: str = Field(description="All problems in one readable line.")
    errors: list[ErrorItem]


_NOT_AN_OBJECT = (
    'expected a JSON object with this model\'s fields (see /docs; e.g. {"text": "..."}), '
    "sent with content-type application/json"
)


def _error_item(error: dict[str, Any]) -> ErrorItem:
    loc = [str(part) for part in error.get("loc", ())]
    if loc and loc[0] == "body":
        loc = loc[1:]
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "JSON decode error")
        where = f" at character {loc[0]}" if loc else ""
        return ErrorItem(field="body", message=f"malformed JSON: {reason}{where}")
    if not loc and error.get("type") == "model_attributes_type":
        return ErrorItem(field="body", message=_NOT_AN_OBJECT)
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return ErrorItem(field=".".join(loc) or "body", message=message)


def format_errors(errors: list[dict[str, Any]]) -> ErrorResponse:
    """Readable error body from pydantic/FastAPI error dicts; never echoes the rejected input."""
    items = [_error_item(error) for error in errors]
    line = "; ".join(f"{item.field}: {item.message}" for item in items) or "invalid request"
    return ErrorResponse(message=line, errors=items)


def validation_message(err: ValidationError) -> str:
    """One readable line for a pydantic ValidationError (used for app-argument errors)."""
    return format_errors(err.errors()).message
