"""What the CRM connectors share: object settings, the answer type, a token once on 401.

HubSpot and Salesforce differ in their endpoints, their auth and their error bodies, but each
maps Lance values onto records of a few object types, reads JSON answers whole, renews its
access token once when the remote says it went stale, and classifies a refused request the
same way (:func:`bridge.classify.decide`, with the CRM's own :class:`~bridge.classify.Rule`
for the statuses it means differently).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar, cast

import aiohttp
import pydantic

from bridge import classify, connector
from bridge.classify import Outcome
from connectors import mapping

Field = Literal["emails", "phones", "summary"]


class ObjectSettings(pydantic.BaseModel):
    """How one CRM object type is enriched and written back.

    Each CRM names its keys (HubSpot ``properties``, Salesforce ``fields``): a subclass sets
    :attr:`MAPPED` to the name of its mapping and gives it defaults in ``DEFAULT_<MAPPED>``.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    MAPPED: ClassVar[str]

    enrich: tuple[Field, ...]

    def mapped(self) -> dict[str, mapping.PropertyMap]:
        """Every mapping of this object type, by CRM field name."""
        found: dict[str, mapping.PropertyMap] = getattr(self, self.MAPPED)
        return found

    def writable(self) -> dict[str, mapping.PropertyMap]:
        """The mapped fields whose policy allows writing."""
        return {name: m for name, m in self.mapped().items() if m.policy != "never"}


def over_defaults(defaults: Mapping[str, str], value: Any) -> Any:
    """A configured mapping laid over the defaults: entries add to or replace them.

    ``policy = "never"`` on a default switches it off.
    """
    if isinstance(value, Mapping):
        return {**defaults, **value}
    return value


@dataclasses.dataclass(slots=True)
class Answer:
    """A CRM's response, read whole: status, decoded JSON body (or ``None``), headers."""

    status: int
    body: Any
    headers: Mapping[str, str]

    @classmethod
    def of(cls, reply: connector.Reply) -> Self:
        """The answer of a reply, its body decoded (``None`` when empty or not JSON)."""
        return cls(reply.status, decode(reply.raw), reply.headers)

    def message(self) -> str:
        """The CRM's own words about an error; each CRM says where it puts them."""
        return ""


def decode(raw: bytes) -> Any:
    """A JSON body, or ``None`` when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


ConfigT = TypeVar("ConfigT", bound=connector.ConnectorConfig)
LoginT = TypeVar("LoginT")
AnswerT = TypeVar("AnswerT", bound=Answer)


class CrmConnector(connector.Connector, Generic[ConfigT, LoginT, AnswerT]):
    """Base of a CRM connector: typed settings, authorised calls, one failure classifier.

    A subclass says how to get a login (:meth:`login`), when an answer means it went stale
    (:meth:`login_stale`), how to get a new one (:meth:`log_in_again`) and how to send one
    authorised request (:meth:`send_call`); :meth:`call` does the rest.
    """

    needs_record = True

    def __init__(
        self,
        config: connector.ConnectorConfig,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, session, clock=clock)
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}")
        self.settings = cast(ConfigT, config)

    async def call(self, method: str, path: str, body: Any = None) -> AnswerT:
        """One authorised request; a new login once when the answer says it went stale.

        Raises:
            aiohttp.ClientError, TimeoutError: the request did not complete.
        """
        login = await self.login()
        answer = await self.send_call(method, path, body, login)
        if self.login_stale(answer):
            login = await self.log_in_again(login)
            answer = await self.send_call(method, path, body, login)
        return answer

    def failure(self, answer: AnswerT) -> Outcome:
        """The outcome of a whole request the CRM refused or failed."""
        status, text = answer.status, answer.message()
        reason = f"HTTP {status}" + (f" {text}" if text else "")
        retry_after = classify.parse_retry_after(answer.headers.get("Retry-After"))
        return classify.decide(status, reason, retry_after, self.rule_for(answer, reason))

    def rule_for(self, answer: AnswerT, reason: str) -> classify.Rule | None:
        """How this CRM means ``answer`` unlike plain HTTP, or ``None``.

        A 2xx only comes here when its body was not the shape the request answers with:
        nothing says the records were written, so it is retried.
        """
        if 200 <= answer.status < 300:
            return classify.Rule(
                error=f"HTTP {answer.status}: an answer of an unexpected shape",
                honour_header=False,
            )
        return None

    @abc.abstractmethod
    async def login(self) -> LoginT:
        """The current login (access token ...), obtained first if there is none."""

    @abc.abstractmethod
    async def log_in_again(self, stale: LoginT) -> LoginT:
        """A new login, replacing ``stale`` (once, however many requests found it stale)."""

    @abc.abstractmethod
    def login_stale(self, answer: AnswerT) -> bool:
        """Whether ``answer`` says the login it was sent with is no longer valid."""

    @abc.abstractmethod
    async def send_call(self, method: str, path: str, body: Any, login: LoginT) -> AnswerT:
        """Send one request with ``login``; through :meth:`Connector.request`."""
