"""Salesforce calling the bridge: workflow Outbound Messages (SOAP) and their Ack."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Mapping, Sequence

import aiohttp
from defusedxml import ElementTree as SafeElementTree  # type: ignore[import-untyped]
from defusedxml.common import DefusedXmlException  # type: ignore[import-untyped]

MAX_NOTIFICATIONS = 100  # per Outbound Message
MAX_BACKOFF_S = 7200.0  # Outbound Message retries are capped at 2 hours apart

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
OUTBOUND_HEADERS = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'}
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

ACK_RESPONSE = (
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>\n'
    b' <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    b"<Ack>true</Ack></notificationsResponse>\n"
    b"</soapenv:Body></soapenv:Envelope>"
)


def _xml_text(value: str) -> str:
    if _XML_INVALID.search(value):
        raise ValueError(f"{value!r} holds characters XML 1.0 cannot carry")
    return html.escape(value, quote=False)


def _xml_name(name: str) -> str:
    if not _XML_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an sObject or field API name")
    return name


def _notification(notification_id: str, sobject: str, fields: Mapping[str, str | None]) -> str:
    record_id = fields.get("Id")
    if not record_id:
        raise ValueError(f"notification {notification_id!r} has no Id field")
    ordered = {"Id": record_id, **{k: v for k, v in fields.items() if v is not None}}
    values = "".join(
        f"     <sf:{_xml_name(k)}>{_xml_text(v)}</sf:{k}>\n" for k, v in ordered.items()
    )
    return (
        "   <Notification>\n"
        f"    <Id>{_xml_text(notification_id)}</Id>\n"
        f'    <sObject xsi:type="sf:{_xml_name(sobject)}" xmlns:sf="{SOBJECT_NS}">\n'
        f"{values}"
        "    </sObject>\n"
        "   </Notification>\n"
    )


def outbound_message(
    org_id: str,
    notifications: Sequence[tuple[str, str, Mapping[str, str | None]]],
    *,
    action_id: str = "04k000000000001AAA",
    session_id: str | None = None,
    instance_url: str = "https://example.my.salesforce.com",
    api_version: str = "66.0",
) -> bytes:
    """The SOAP envelope Salesforce POSTs for a workflow Outbound Message.

    Args:
        org_id: ``OrganizationId`` (18 characters; URLs carry its first 15).
        notifications: ``(notification Id, sObject type, fields)`` each; fields must include
            ``"Id"``; fields set to ``None`` are left out, as Salesforce leaves out nulls.
        action_id: ``ActionId`` of the rule or action that sent it.
        session_id: ``SessionId``, or ``None`` for ``xsi:nil`` ("Send Session ID" off).
        instance_url: Base of ``EnterpriseUrl`` and ``PartnerUrl``.
        api_version: API version in those URLs.

    Returns:
        The UTF-8 envelope.

    Raises:
        ValueError: Not 1 to 100 notifications, a missing ``Id``, a bad name or character.
    """
    if not 1 <= len(notifications) <= MAX_NOTIFICATIONS:
        raise ValueError(f"an Outbound Message carries 1 to {MAX_NOTIFICATIONS} notifications")
    session = (
        '<SessionId xsi:nil="true"/>'
        if session_id is None
        else f"<SessionId>{_xml_text(session_id)}</SessionId>"
    )
    soap_path = f"{api_version}/{org_id[:15]}"
    body = "".join(_notification(*notification) for notification in notifications)
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV_NS}" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        " <soapenv:Body>\n"
        f'  <notifications xmlns="{OUTBOUND_NS}">\n'
        f"   <OrganizationId>{_xml_text(org_id)}</OrganizationId>\n"
        f"   <ActionId>{_xml_text(action_id)}</ActionId>\n"
        f"   {session}\n"
        f"   <EnterpriseUrl>{_xml_text(instance_url)}/services/Soap/c/{soap_path}</EnterpriseUrl>\n"
        f"   <PartnerUrl>{_xml_text(instance_url)}/services/Soap/u/{soap_path}</PartnerUrl>\n"
        f"{body}"
        "  </notifications>\n"
        " </soapenv:Body>\n"
        "</soapenv:Envelope>\n"
    )
    return text.encode()


def is_ack(body: bytes) -> bool:
    """Whether a reply is the SOAP ``notificationsResponse`` with ``<Ack>true</Ack>``.

    Parsed with defusedxml and no DTD allowed, so hostile replies are refused, not expanded.
    """
    try:
        root = SafeElementTree.fromstring(body, forbid_dtd=True)
    except (SafeElementTree.ParseError, DefusedXmlException, ValueError):
        return False
    if root.tag != f"{{{SOAP_ENV_NS}}}Envelope":
        return False
    ack = root.find(
        f"{{{SOAP_ENV_NS}}}Body/{{{OUTBOUND_NS}}}notificationsResponse/{{{OUTBOUND_NS}}}Ack"
    )
    return ack is not None and (ack.text or "").strip() == "true"


async def _deliver(session: aiohttp.ClientSession, url: str, envelope: bytes) -> bool:
    try:
        async with session.post(url, data=envelope, headers=OUTBOUND_HEADERS) as response:
            reply = await response.read()
    except (aiohttp.ClientError, TimeoutError):
        return False
    return response.status == 200 and is_ack(reply)


async def send_outbound_message(
    session: aiohttp.ClientSession,
    url: str,
    envelope: bytes,
    *,
    max_attempts: int = 3,
    backoff_s: float = 0.0,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> bool:
    """POST an Outbound Message as Salesforce does, retrying until it is acknowledged.

    A non-200 status, a body that is not the SOAP Ack, ``<Ack>false</Ack>`` and connection
    errors all count as failed attempts.

    Args:
        session: The client session to send with.
        url: The endpoint configured on the Outbound Message.
        envelope: From :func:`outbound_message`.
        max_attempts: Attempts before giving up.
        backoff_s: Wait before the second attempt, doubled each time (0 in tests).
        max_backoff_s: Cap on the wait (Salesforce caps it at 2 hours).

    Returns:
        Whether an attempt was acknowledged.
    """
    for attempt in range(max_attempts):
        if attempt and backoff_s:
            await asyncio.sleep(min(backoff_s * 2 ** (attempt - 1), max_backoff_s))
        if await _deliver(session, url, envelope):
            return True
    return False


def _doctype_envelope(doctype: str, value: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}\n'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV_NS}"><soapenv:Body>'
        f'<notifications xmlns="{OUTBOUND_NS}"><OrganizationId>{value}</OrganizationId>'
        "</notifications></soapenv:Body></soapenv:Envelope>\n"
    ).encode()


_LAUGHS = "\n".join(
    ['<!ENTITY lol "lol">']
    + [f'<!ENTITY lol{i} "{(f"&lol{i - 1};" if i > 1 else "&lol;") * 10}">' for i in range(1, 10)]
)
XML_BOMB = _doctype_envelope(f"<!DOCTYPE lolz [\n{_LAUGHS}\n]>", "&lol9;")
"""Billion laughs: nine levels of ten-fold entity expansion inside a SOAP envelope."""

EXTERNAL_ENTITY = _doctype_envelope(
    '<!DOCTYPE soapenv:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;"
)
"""XXE: an external entity reading ``file:///etc/passwd`` into ``OrganizationId``."""
