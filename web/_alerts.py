"""Alerts: rules read from DASHFROG_ALERT_RULES, evaluated against the store,
notices POSTed to a webhook, signed with HMAC-SHA256.

Conditions (``when``), each scoped by flow name, tenant and labels:

- ``failed``: the latest finished run of a flow (per tenant and flow name,
  among runs started within ``window``) failed. Resolved when a later run
  succeeds (or no run is left in the window).
- ``stalled``: a running flow has had no activity for longer than ``for``.
  One incident per flow; resolved when it moves again or ends.
- ``failure_rate``: failed / finished runs started within ``window`` is at
  least ``rate`` (with at least ``min_runs`` finished), per tenant.
- ``p95_duration``: the 95th percentile duration of runs that finished,
  among those started within ``window``, is at least ``duration``, per tenant.

An incident notifies once when it opens and once when it resolves, however
many ``dashfrog api`` processes evaluate the same rules: see
``Store.claim_incident`` (:mod:`dashfrog.storage`) for how the store arbitrates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import click
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dashfrog._exceptions import ConfigurationError
from dashfrog._models import MAX_LIMIT, FlowFilter, FlowList, FlowSummary
from dashfrog._settings import Settings, get_settings
from dashfrog.storage import Store

log = logging.getLogger("dashfrog.alerts")

SIGNATURE_HEADER = "X-DashFrog-Signature"
TIMESTAMP_HEADER = "X-DashFrog-Timestamp"
Condition = Literal["failed", "stalled", "failure_rate", "p95_duration"]

# Flows read per rule and evaluation: a bound on what one rule can cost.
_MAX_FLOWS = 100_000
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0
_SEND_TIMEOUT_S = 10.0


def _seconds(value: Any, what: str) -> float:
    """A duration: seconds as a number, or ``30s``, ``15m``, ``2h``, ``7d``, ``1w``, ``1h30m``."""
    from dashfrog._timeexpr import parse_duration

    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration such as 15m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        parsed = parse_duration(value) if not value.strip().startswith("-") else None
        if parsed is None:
            raise ValueError(f"{what}: {value!r} is not a duration; use e.g. 30s, 15m, 2h, 7d, 1w")
        seconds = parsed.total_seconds()
    else:
        raise ValueError(f"{what}: expected a duration such as 15m, got {value!r}")
    if not seconds > 0:
        raise ValueError(f"{what} must be longer than 0 s")
    return seconds


def _valid_webhook(url: str | None) -> str | None:
    if url is not None:
        _check_webhook(url)
    return url


# A rule's or a rule file's webhook: an http(s) URL with a host, or none.
Webhook = Annotated[str | None, AfterValidator(_valid_webhook)]


class AlertRule(BaseModel):
    """One rule of the rule file."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=200)
    when: Condition
    flow: str | None = None
    tenant: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    stalled_for_s: float | None = Field(None, alias="for")
    window_s: float | None = Field(None, alias="window")
    rate: float | None = Field(None, gt=0, le=1)
    duration_s: float | None = Field(None, alias="duration")
    min_runs: int = Field(1, ge=1)
    webhook: Webhook = None

    @field_validator("stalled_for_s", "window_s", "duration_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else _seconds(value, "duration")

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _needs(self) -> AlertRule:
        need = {"stalled": ("stalled_for_s", "for"), "failure_rate": ("rate", "rate"),
                "p95_duration": ("duration_s", "duration")}.get(self.when)
        if need is not None and getattr(self, need[0]) is None:
            raise ValueError(f"a '{self.when}' rule needs '{need[1]}'")
        return self

    @property
    def window(self) -> timedelta:
        default = 7 * 86_400 if self.when == "stalled" else 86_400 if self.when == "failed" else 3_600
        return timedelta(seconds=self.window_s or default)

    def describe(self) -> str:
        scope = [f"flow={self.flow}" if self.flow else "any flow"]
        if self.tenant:
            scope.append(f"tenant={self.tenant}")
        scope += [f"{k}={v}" for k, v in sorted(self.labels.items())]
        what = {
            "failed": "latest run failed",
            "stalled": f"no activity for {_human(self.stalled_for_s)}",
            "failure_rate": f"failure rate >= {self.rate:.0%}" if self.rate else "",
            "p95_duration": f"p95 duration >= {_human(self.duration_s)}",
        }[self.when]
        window = "" if self.when == "stalled" else f" over {_human(self.window.total_seconds())}"
        return f"{what}{window} ({', '.join(scope)})"


def _human(seconds: float | None) -> str:
    s = float(seconds or 0)
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{int(s // size)}{unit}"
    return f"{s:g}s"


def _check_webhook(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook must be an http(s) URL, got {_safe_url(url)!r}")


def _safe_url(url: str) -> str:
    """Scheme and host only: webhook paths and queries often hold a secret."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{':' + str(parts.port) if parts.port else ''}/…"


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook: Webhook = None
    rules: list[AlertRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleFile:
        names = [r.name for r in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique: {', '.join(twice)}")
        return self


def parse_rules(text: str, source: str = "rules") -> RuleFile:
    """A rule file's text (JSON, or YAML when pyyaml is installed); ConfigurationError if invalid."""
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")) or source.endswith(".json"):
            data = json.loads(text)
        else:
            try:
                import yaml
            except ImportError:
                raise ConfigurationError(
                    f"{source}: YAML rule files need pyyaml (pip install 'dashfrog[web]'), or write JSON"
                ) from None
            data = yaml.safe_load(text)
    except (ValueError, ImportError) as exc:
        raise ConfigurationError(f"{source}: not valid JSON/YAML: {exc}") from None
    except Exception as exc:  # yaml.YAMLError has no common base we can import lazily
        raise ConfigurationError(f"{source}: not valid YAML: {exc}") from None
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: expected a mapping with 'rules:' (or a list of rules)")
    try:
        return RuleFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"{source}: {problems}") from None


def load_rules(settings: Settings) -> RuleFile | None:
    """The rule file DASHFROG_ALERT_RULES names, or None when it names none."""
    if not settings.alert_rules:
        return None
    path = Path(settings.alert_rules)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"DASHFROG_ALERT_RULES={path}: cannot read it ({exc.strerror})") from None
    return parse_rules(text, str(path))


# -- evaluation -----------------------------------------------------------------


@dataclass(frozen=True)
class Firing:
    """A condition that holds now: the would-be incident."""

    rule: AlertRule
    tenant: str
    subject: str
    details: dict[str, Any]

    @property
    def key(self) -> str:
        raw = f"{self.rule.name}\0{self.rule.when}\0{self.tenant}\0{self.subject}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


class FlowSource(Protocol):
    """Where rules read flows: a store, or ``dashfrog.query`` (see QueryFlows)."""

    def find_flows(self, flt: FlowFilter) -> FlowList: ...


class QueryFlows:
    """Flows through ``dashfrog.query``: the store directly when it is a ClickHouse
    server, else the running ``dashfrog up`` / ``dashfrog api`` (a chDB store
    belongs to the process that opened it), as the other read commands do."""

    def find_flows(self, flt: FlowFilter) -> FlowList:
        from dashfrog import query

        return query.flows(
            tenant=flt.tenant, status=flt.status, name=flt.name, labels=flt.labels,
            since=flt.since, until=flt.until, limit=flt.limit, cursor=flt.cursor,
        )


def _flows(store: FlowSource, rule: AlertRule, since: datetime, status: str | None = None) -> Iterator[FlowSummary]:
    cursor: str | None = None
    seen = 0
    while True:
        flt = FlowFilter.parse(
            tenant=rule.tenant, name=rule.flow, labels=rule.labels or None, status=status,
            since=since, limit=MAX_LIMIT, cursor=cursor,
        )
        page = store.find_flows(flt)
        yield from page.flows
        seen += len(page.flows)
        cursor = page.next_cursor
        if cursor is None or seen >= _MAX_FLOWS:
            if cursor is not None:
                log.warning("alert rule %r: read the newest %d flows only", rule.name, seen)
            return


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank


def evaluate_rule(store: FlowSource, rule: AlertRule, now: datetime) -> list[Firing]:
    """What ``rule`` fires now, one entry per incident subject."""
    since = now - rule.window
    if rule.when == "stalled":
        quiet_since = now - timedelta(seconds=rule.stalled_for_s or 0)
        return [
            Firing(rule, f.tenant, f.flow_id, {
                "flow_id": f.flow_id, "flow": f.name, "current_step": f.current_step,
                "last_activity": f.last_activity.isoformat(),
                "quiet_s": round((now - f.last_activity).total_seconds(), 1),
            })
            for f in _flows(store, rule, since, "running")
            if f.last_activity < quiet_since
        ]
    finished: dict[tuple[str, str], list[FlowSummary]] = {}
    for f in _flows(store, rule, since):
        if f.status != "running":
            group = (f.tenant, f.name) if rule.when == "failed" else (f.tenant, "")
            finished.setdefault(group, []).append(f)
    out: list[Firing] = []
    for (tenant, name), runs in sorted(finished.items()):
        if rule.when == "failed":
            runs.sort(key=lambda f: (f.ended_at or f.last_activity, f.flow_id), reverse=True)
            if runs[0].status != "failed":
                continue
            failing = [f for f in _until_success(runs)]
            first = failing[0]
            out.append(Firing(rule, tenant, name, {
                "flow": name, "failed_runs": len(failing),
                "flow_ids": [f.flow_id for f in failing[:10]],
                "error": f"{first.error.type}: {first.error.message}" if first.error else None,
                "failed_step": first.error.step_name if first.error else None,
            }))
            continue
        if len(runs) < rule.min_runs:
            continue
        if rule.when == "failure_rate":
            failed = sum(1 for f in runs if f.status == "failed")
            rate = failed / len(runs)
            if rate >= (rule.rate or 0):
                out.append(Firing(rule, tenant, "", {
                    "failure_rate": round(rate, 4), "failed": failed, "finished": len(runs),
                    "window_s": rule.window.total_seconds(),
                }))
        else:
            durations = [f.duration_ms for f in runs if f.duration_ms is not None]
            if len(durations) >= rule.min_runs:
                p95_ms = _p95(durations)
                if p95_ms >= (rule.duration_s or 0) * 1000:
                    out.append(Firing(rule, tenant, "", {
                        "p95_ms": round(p95_ms, 1), "finished": len(durations),
                        "window_s": rule.window.total_seconds(),
                    }))
    return out


def _until_success(newest_first: list[FlowSummary]) -> Iterator[FlowSummary]:
    for f in newest_first:
        if f.status != "failed":
            return
        yield f


def evaluate_all(source: FlowSource, rules: RuleFile, now: datetime) -> list[Firing]:
    firing: list[Firing] = []
    for rule in rules.rules:
        firing += evaluate_rule(source, rule, now)
    return firing


# -- notices --------------------------------------------------------------------


def sign(body: bytes, timestamp: str, secret: str) -> str:
    """The signature header's value: HMAC-SHA256 over ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def send_notice(
    url: str,
    notice: dict[str, Any],
    secret: str,
    *,
    attempts: int,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST ``notice`` as signed JSON; retries connection errors, 429 and 5xx with
    a doubling backoff, ``attempts`` tries at most. True once a 2xx came back."""
    body = json.dumps(notice, sort_keys=True, separators=(",", ":")).encode()
    where = _safe_url(url)
    for attempt in range(1, attempts + 1):
        timestamp = str(int(time.time()))
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("User-Agent", "dashfrog-alerts")
        request.add_header(TIMESTAMP_HEADER, timestamp)
        request.add_header(SIGNATURE_HEADER, sign(body, timestamp, secret))
        try:
            with urllib.request.urlopen(request, timeout=_SEND_TIMEOUT_S) as response:
                if 200 <= response.status < 300:
                    return True
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                log.error("alert notice to %s refused (%s): not retried", where, problem)
                return False
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        if attempt < attempts:
            delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (attempt - 1))
            log.warning("alert notice to %s failed (%s); try %d/%d in %.1f s", where, problem,
                        attempt + 1, attempts, delay)
            sleep(delay)
    log.error("alert notice to %s given up after %d tries", where, attempts)
    return False


def notice(event: str, firing_or_incident: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {"source": "dashfrog", "event": event, "at": now.isoformat(), **firing_or_incident}


@dataclass
class Evaluator:
    """Evaluates the rules against the store and notifies, once per incident
    transition across every evaluator sharing the store."""

    store: Store
    rules: RuleFile
    settings: Settings
    me: str = field(default_factory=lambda: uuid.uuid4().hex)
    rounds: int = 0
    last_error: str | None = None
    last_round_at: datetime | None = None
    sent: int = 0

    def webhook_for(self, rule: AlertRule) -> str | None:
        return rule.webhook or self.rules.webhook or self.settings.alert_webhook_url

    def check(self) -> None:
        """Refuse to start with rules that would notify unsigned or nowhere."""
        for rule in self.rules.rules:
            if self.webhook_for(rule) is None:
                raise ConfigurationError(
                    f"alert rule {rule.name!r} has no webhook: set DASHFROG_ALERT_WEBHOOK_URL, "
                    "or 'webhook:' in the rule file or the rule"
                )
        if self.rules.rules and self.settings.alert_webhook_secret is None:
            raise ConfigurationError(
                "alert rules are configured but DASHFROG_ALERT_WEBHOOK_SECRET is not: "
                "notices are always signed"
            )

    def evaluate(self, now: datetime | None = None) -> list[Firing]:
        now = now or datetime.now(UTC)
        return evaluate_all(self.store, self.rules, now)

    def run_once(self, now: datetime | None = None) -> list[tuple[str, dict[str, Any]]]:
        """One round: open what fires and is not open, resolve what is open and no
        longer fires. Returns the notices this evaluator won and sent (or tried)."""
        now = now or datetime.now(UTC)
        firing = {f.key: f for f in self.evaluate(now)}
        latest = {i["key"]: i for i in self.store.latest_incidents()}
        names = {r.name: r for r in self.rules.rules}
        done: list[tuple[str, dict[str, Any]]] = []
        for key, f in firing.items():
            known = latest.get(key)
            if known is not None and known["open"]:
                continue
            seq = 0 if known is None else known["seq"] + 1
            incident = {"incident": key, "seq": seq, "rule": f.rule.name, "condition": f.rule.when,
                        "tenant": f.tenant, "subject": f.subject, "details": f.details,
                        "description": f.rule.describe()}
            if self._claim(key, seq, "opened", f.rule, f.tenant, f.subject, f.details):
                done.append(("opened", self._notify(f.rule, notice("opened", incident, now))))
        for key, known in latest.items():
            rule = names.get(known["rule"])
            if not known["open"] or key in firing or rule is None:
                continue  # rules this evaluator does not know are left to those that do
            incident = {"incident": key, "seq": known["seq"], "rule": rule.name,
                        "condition": known["condition"], "tenant": known["tenant"],
                        "subject": known["subject"], "details": known["details"],
                        "opened_at": known["opened_at"], "description": rule.describe()}
            if self._claim(key, known["seq"], "resolved", rule, known["tenant"], known["subject"],
                           known["details"]):
                done.append(("resolved", self._notify(rule, notice("resolved", incident, now))))
        self.rounds += 1
        self.last_round_at = now
        return done

    def _claim(self, key: str, seq: int, transition: str, rule: AlertRule, tenant: str,
               subject: str, details: dict[str, Any]) -> bool:
        return self.store.claim_incident(key=key, seq=seq, transition=transition, rule=rule.name,
                                         condition=rule.when, tenant=tenant, subject=subject,
                                         details=details, me=self.me)

    def _notify(self, rule: AlertRule, body: dict[str, Any]) -> dict[str, Any]:
        url = self.webhook_for(rule)
        secret = self.settings.alert_webhook_secret
        if url is None or secret is None:  # check() refuses this at start
            log.error("alert %s: no webhook or no secret, notice dropped", rule.name)
            return body
        if send_notice(url, body, secret.get_secret_value(), attempts=self.settings.alert_send_attempts):
            self.sent += 1
        return body

    def status(self) -> dict[str, Any]:
        return {
            "rules": len(self.rules.rules),
            "rounds": self.rounds,
            "last_round_at": self.last_round_at.isoformat() if self.last_round_at else None,
            "last_error": self.last_error,
            "interval_s": self.settings.alert_interval_s,
        }


class EvaluatorThread:
    """Runs an Evaluator every DASHFROG_ALERT_INTERVAL_S seconds in a thread of
    its own: store reads and webhook retries never block the API's event loop."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashfrog-alerts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        interval = self.evaluator.settings.alert_interval_s
        self._stop.wait(interval - time.time() % interval)
        while not self._stop.is_set():
            try:
                self.evaluator.run_once()
                self.evaluator.last_error = None
            except Exception as exc:  # one bad round must not end alerting
                self.evaluator.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("alert evaluation failed; next try in %.0f s", interval)
            # Rounds start on wall-clock multiples of the interval: evaluators sharing
            # a store evaluate together and the store's claims decide who notifies.
            self._stop.wait(interval - time.time() % interval)


# -- CLI ----------------------------------------------------------------------------


def _rules_or_exit(settings: Settings) -> RuleFile:
    try:
        rules = load_rules(settings)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    if rules is None:
        raise click.ClickException("no rule file: set DASHFROG_ALERT_RULES to a YAML or JSON file")
    return rules


@click.group("alerts")
def alerts_group() -> None:
    """Alert rules (DASHFROG_ALERT_RULES): list them, test them against the store."""


@alerts_group.command("list")
def list_command() -> None:
    """Check the rule file and print its rules."""
    settings = get_settings()
    rules = _rules_or_exit(settings)
    for rule in rules.rules:
        url = rule.webhook or rules.webhook or settings.alert_webhook_url
        click.echo(f"{rule.name}  [{rule.when}]  {rule.describe()}  -> {_safe_url(url) if url else 'NO WEBHOOK'}")
    click.echo(f"{len(rules.rules)} rule(s) in {settings.alert_rules}")


@alerts_group.command("test")
@click.option("--send", is_flag=True, help="Also POST each would-be notice to its webhook (signed), marked as a test.")
def test_command(send: bool) -> None:
    """Evaluate every rule now against the store and print what would fire.

    Reads flows as `dashfrog flows` does (a ClickHouse server directly, else
    the running `dashfrog up` / `dashfrog api`). Claims nothing: incidents
    that the API's evaluator tracks are not touched.
    """
    from dashfrog._exceptions import DashfrogError

    settings = get_settings()
    rules = _rules_or_exit(settings)
    evaluator = Evaluator(QueryFlows(), rules, settings)  # type: ignore[arg-type]
    if send:
        try:
            evaluator.check()
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None
    now = datetime.now(UTC)
    try:
        firing = evaluate_all(QueryFlows(), rules, now)
    except DashfrogError as exc:
        raise click.ClickException(str(exc)) from None
    for f in firing:
        click.echo(f"FIRING {f.rule.name} tenant={f.tenant} {f.subject} {json.dumps(f.details, sort_keys=True)}")
        if send:
            body = notice("test", {"incident": f.key, "rule": f.rule.name, "condition": f.rule.when,
                                   "tenant": f.tenant, "subject": f.subject, "details": f.details,
                                   "description": f.rule.describe()}, now)
            url = evaluator.webhook_for(f.rule)
            secret = settings.alert_webhook_secret
            assert url is not None and secret is not None  # check() above
            ok = send_notice(url, body, secret.get_secret_value(), attempts=settings.alert_send_attempts)
            click.echo(f"  sent to {_safe_url(url)}: {'ok' if ok else 'FAILED'}")
    quiet = {r.name for r in rules.rules} - {f.rule.name for f in firing}
    for name in sorted(quiet):
        click.echo(f"ok     {name}")
    click.echo(f"{len(firing)} firing, {len(quiet)} rule(s) quiet")
