"""Messages: the body each channel gets, its signature, and the sending (the only I/O here).

Webhook: JSON with `text` (what Slack and Google Chat incoming webhooks show) and, unless the
webhook asks for `body = "text"` (Google Chat refuses unknown fields), the alert's fields; signed
`X-Firstparty-Signature: sha256=<hex HMAC-SHA256 of the body>` when a secret is set. Email: SMTP
from a thread (smtplib), STARTTLS or TLS as configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

import aiohttp

from firstparty.alerts.rules import AlertState
from firstparty.alerts.state import Alert
from firstparty.settings import AlertEmail, AlertWebhook

SIGNATURE_HEADER = "X-Firstparty-Signature"


class NotifyFailed(Exception):
    """A message was not accepted; it is sent again at the next evaluation."""


def text(alert: Alert) -> str:
    """One line a person reads in a chat or a subject."""
    word = "FIRING" if alert.state == AlertState.FIRING else "RESOLVED"
    return f"[{word}] firstparty {alert.rule} {alert.subject}: {alert.detail}"


def body(alert: Alert, *, instance: str | None, full: bool = True) -> bytes:
    """The webhook's JSON body."""
    payload: dict[str, Any] = {"text": text(alert)}
    if full:
        payload["alert"] = {
            "rule": alert.rule,
            "subject": alert.subject,
            "state": alert.state.value,
            "since": alert.since.isoformat(),
            "detail": alert.detail,
            "instance": instance,
        }
    return json.dumps(payload, separators=(",", ":")).encode()


def signature(secret: str, payload: bytes) -> str:
    """The value of the signature header: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


async def send_webhook(
    webhook: AlertWebhook, alert: Alert, *, instance: str | None, client: aiohttp.ClientSession
) -> None:
    """POST the message; NotifyFailed unless answered 2xx."""
    payload = body(alert, instance=instance, full=webhook.body == "full")
    headers = {"Content-Type": "application/json"}
    if webhook.secret is not None:
        headers[SIGNATURE_HEADER] = signature(webhook.secret.get_secret_value(), payload)
    timeout = aiohttp.ClientTimeout(total=webhook.timeout_seconds)
    try:
        async with client.post(
            webhook.url, data=payload, headers=headers, timeout=timeout
        ) as answer:
            status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NotifyFailed(f"webhook: {type(exc).__name__}") from exc
    if not 200 <= status < 300:
        raise NotifyFailed(f"webhook answered {status}")


def email_message(email: AlertEmail, alert: Alert, *, instance: str | None) -> EmailMessage:
    """The email: the line as subject, the fields as text."""
    message = EmailMessage()
    message["Subject"] = text(alert)
    message["From"] = email.sender
    message["To"] = ", ".join(email.to)
    lines = [
        f"rule: {alert.rule}",
        f"subject: {alert.subject}",
        f"state: {alert.state.value}",
        f"since: {alert.since.isoformat()}",
        f"detail: {alert.detail}",
    ]
    if instance:
        lines.append(f"instance: {instance}")
    message.set_content("\n".join(lines) + "\n")
    return message


async def send_email(email: AlertEmail, alert: Alert, *, instance: str | None) -> None:
    """Send through SMTP in a thread; NotifyFailed on any refusal or connection error."""
    message = email_message(email, alert, instance=instance)
    try:
        await asyncio.to_thread(_smtp_send, email, message)
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyFailed(f"email: {type(exc).__name__}: {exc}") from exc


def _smtp_send(email: AlertEmail, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if email.ssl:
        smtp = smtplib.SMTP_SSL(
            email.host, email.port, timeout=email.timeout_seconds, context=context
        )
    else:
        smtp = smtplib.SMTP(email.host, email.port, timeout=email.timeout_seconds)
    with smtp:
        if email.starttls and not email.ssl:
            smtp.starttls(context=context)
        if email.username and email.password is not None:
            smtp.login(email.username, email.password.get_secret_value())
        smtp.send_message(message)
