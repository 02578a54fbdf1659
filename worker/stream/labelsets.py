"""Named, versioned label sets stored in Redis, so label wording, hypotheses and thresholds change without
redeploying producers: a request names a set (`label_set`) instead of listing labels.

    labelq:labelset:<name>        the latest version, JSON
    labelq:labelset:<name>:v<N>   every version, JSON (kept for `get --version`)
    labelq:labelsets              the set of names
    labelq:labelset:<name>:candidate   a refit's candidate that was not promoted (worker/ops/refit.py)
    labelq:labelset:<name>:shadow      the candidate running in shadow (worker/stream/shadow.py)

Built-in sets ship in the wheel (worker/stream/builtin/, fitted by tools/fit_builtin_labelsets.py): a request
may name one with nothing stored, and a stored set of the same name overrides it (its latest version is read
first, every claim).

Workers read the latest version of the sets the messages of a claim name in one round trip per claim, as they
arrive (a request is costed with its set's labels and examples, exactly as the same labels inline), so a new
version is used from the next claim on, without a restart.

A set is held to the limits a request carrying its labels is held to (`RequestLimits`, from the worker's settings:
LABELQ_MAX_LABELS, LABELQ_MAX_LABEL_CHARS, ...), given as the validation context: `LabelSetStore(client, limits)`,
`LabelSet.from_yaml(..., limits=...)`, `LabelSet.model_validate(data, context=limits)`. Without one, the
defaults (100 labels). A stored set over the reader's limits is `Unusable`, with the limit it exceeds.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable
from importlib import resources
from typing import Any

import redis
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas import ClassifyRequest, Label, RequestLimits
from schemas.request import DEFAULT_THRESHOLD, LABEL_SET_NAME_PATTERN, expand_label_shorthand, template_problem
from schemas.transport import KEY_PREFIX
from worker.engine.heads import LinearHead
from worker.errors import InputError

log = logging.getLogger(__name__)

LABELSET_KEY = KEY_PREFIX + "labelset:"
LABELSET_NAMES_KEY = KEY_PREFIX + "labelsets"
CANDIDATE_SUFFIX = ":candidate"  # + after a set's key: a refit's candidate that was not promoted (worker/ops/refit.py)
SHADOW_SUFFIX = ":shadow"  # + after a set's key: the candidate scored in shadow beside the live version

# Atomically: next version number (at least ARGV[3]: a fleet writes one number on every server), store
# {"version": N, "set": <doc>} as the latest and as version N, remember the name. The document is spliced in as
# text (cjson would turn empty lists into objects).
_PUT = """
local version = redis.call('INCR', KEYS[1] .. ':version')
local floor = tonumber(ARGV[3]) or 0
if version < floor then
  version = floor
  redis.call('SET', KEYS[1] .. ':version', version)
end
local stored = '{"version":' .. version .. ',"set":' .. ARGV[1] .. '}'
redis.call('SET', KEYS[1], stored)
redis.call('SET', KEYS[1] .. ':v' .. version, stored)
redis.call('SADD', KEYS[2], ARGV[2])
return version
"""


class LabelSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=LABEL_SET_NAME_PATTERN)  # what a request may name: no ':' to reach other keys
    version: int = 0
    labels: tuple[Label, ...] = Field(min_length=1)  # at most the reader's max_labels (`_shorthand`)
    hypothesis_template: str | None = None
    multi_label: StrictBool | None = None
    head: LinearHead | None = Field(None, description="Learned from examples by `labelq labelsets fit`")
    builtin: StrictBool = Field(False, description="Shipped with labelq (worker/stream/builtin/): no `put` needed")
    provenance: str | None = Field(
        None, max_length=4000, description="Where its head's data came from and under which licences"
    )

    @model_validator(mode="after")
    def _head_fits(self) -> LabelSet:
        if self.head is None:
            return self
        if self.head.labels != tuple(label.name for label in self.labels):
            raise ValueError("the head's labels are not the set's labels, in order: refit it")
        if self.multi_label is not None and self.multi_label != self.head.multi_label:
            raise ValueError("the head was fitted for the other mode (multi_label) than the set's default")
        return self

    @field_validator("hypothesis_template")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        limit = limits_of(info).max_label_text_chars
        problem = template_problem(value, limit) if value is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _shorthand(cls, value: Any, info: ValidationInfo) -> Any:
        limit = limits_of(info).max_labels
        if isinstance(value, list | tuple) and len(value) > limit:  # counted before any label is validated
            raise PydanticCustomError(
                "too_many_labels",
                "{count} labels; the limit is {limit} (LABELQ_MAX_LABELS: set it alike on the workers and where "
                "labelq commands run)",
                {"count": len(value), "limit": limit},
            )
        return expand_label_shorthand(value)

    @field_validator("labels")
    @classmethod
    def _unique(cls, value: tuple[Label, ...]) -> tuple[Label, ...]:
        names = [label.name for label in value]
        if len(names) != len(set(names)):
            raise ValueError("label names must be unique")
        return value

    @classmethod
    def from_yaml(
        cls, name: str, text: str, thresholds: dict[str, float] | None = None, limits: RequestLimits | None = None
    ) -> LabelSet:
        """A label set from YAML (`labels:` with name, description, hypothesis, threshold; optional
        `hypothesis_template`, `multi_label`); `thresholds` (e.g. fitted by `labelq eval`) override; `limits`: the
        reader's (default: `RequestLimits()`)."""
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            raise ValueError(f"{where}not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
        if not isinstance(data, dict):
            raise ValueError("a label set file is a mapping with a `labels` list")
        data.pop("version", None)  # what `labelq labelsets get` prints: the store numbers versions itself
        data.pop("head", None)  # likewise: a head is fitted (`labelq labelsets fit`), never written by hand
        if data.pop("builtin", None):  # a copy of a built-in set (`get` output): its head and provenance stay
            data.pop("provenance", None)
        labelset = cls.model_validate({**data, "name": name}, context=limits)
        if thresholds:
            unknown = set(thresholds) - {label.name for label in labelset.labels}
            if unknown:
                raise ValueError(f"thresholds for labels not in the set: {sorted(unknown)}")
            labels = tuple(
                label.model_copy(update={"threshold": thresholds.get(label.name, label.threshold)})
                for label in labelset.labels
            )
            labelset = labelset.model_copy(update={"labels": labels})
        return labelset

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Each label's threshold as a request naming the set is served with (no threshold of its own)."""
        return tuple(label.threshold_or(DEFAULT_THRESHOLD) for label in self.labels)

    def apply_to(self, request: ClassifyRequest) -> ClassifyRequest:
        """The request with this set's labels; the set's template and multi_label unless the request set them."""
        update: dict[str, Any] = {"labels": self.labels}
        if request.hypothesis_template is None and self.hypothesis_template is not None:
            update["hypothesis_template"] = self.hypothesis_template
        if "multi_label" not in request.model_fields_set and self.multi_label is not None:
            update["multi_label"] = self.multi_label
        return request.model_copy(update=update)


class LabelSetStore:
    def __init__(self, client: redis.Redis, limits: RequestLimits | None = None, cache_size: int = 256) -> None:
        """`limits`: what a stored set must satisfy to be used here (the worker's or the command's settings,
        `Settings.limits()`); default `RequestLimits()`."""
        self.client = client
        self.limits = limits or RequestLimits()
        self._put = client.register_script(_PUT)
        # stored document -> the parsed set, or why it cannot be used (said once, not at every claim)
        self._parsed: OrderedDict[bytes | str, LabelSet | Unusable] = OrderedDict()
        self._cache_size = cache_size

    def put(self, labelset: LabelSet, at_least: int = 0) -> int:
        """Store a new version; returns its number (1, 2, ...; at least `at_least`)."""
        body = labelset.model_dump_json(exclude={"version", "builtin"})  # a stored set is never a built-in one
        keys = [LABELSET_KEY + labelset.name, LABELSET_NAMES_KEY]
        return int(self._put(keys=keys, args=[body, labelset.name, at_least]))

    def last_version(self, name: str) -> int:
        """The highest version number given to `name` here (0: none)."""
        return int(self.client.get(LABELSET_KEY + name + ":version") or 0)

    def put_candidate(self, labelset: LabelSet) -> None:
        """Keep a refit's candidate apart (it is not served; the next refit replaces it)."""
        self.client.set(LABELSET_KEY + labelset.name + CANDIDATE_SUFFIX, labelset.model_dump_json(exclude={"builtin"}))

    def drop_candidate(self, name: str) -> None:
        self.client.delete(LABELSET_KEY + name + CANDIDATE_SUFFIX)

    def candidate(self, name: str) -> LabelSet | None:
        raw = self.client.get(LABELSET_KEY + name + CANDIDATE_SUFFIX)
        return LabelSet.model_validate_json(raw, context=self.limits) if raw is not None else None

    def get(self, name: str, version: int | None = None) -> LabelSet | None:
        """A stored version (the latest by default; with none stored, the built-in set of that name), None if
        absent; `InputError` if it cannot be used."""
        if version == 0:  # the built-in set of that name, stored ones or not
            return builtin_labelsets().get(name)
        raw = self.client.get(LABELSET_KEY + name + (f":v{version}" if version else ""))
        if raw is None:
            return builtin_labelsets().get(name) if version is None else None
        try:
            return _load(raw, self.limits)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            which = f"version {version}" if version else "latest version"
            problem = first_problem(exc)
            if "LABELQ_MAX_" in problem:  # a set valid where it was stored, over this reader's limit: raise it here
                raise InputError(f"label set {name} ({which}) is over this command's limits: {problem}") from None
            raise InputError(
                f"label set {name} ({which}) is stored but cannot be used: {problem}; "
                "store a new version (labelq labelsets put or fit)"
            ) from None

    def latest(self, names: Iterable[str]) -> dict[str, LabelSet | Unusable]:
        """The latest version of each named set that exists (one round trip); a stored document that does not
        validate (a corrupt or forged head, say) is `Unusable`, with the reason."""
        return self.latest_with_shadows(names)[0]

    def latest_with_shadows(self, names: Iterable[str]) -> tuple[dict[str, LabelSet | Unusable], dict[str, LabelSet]]:
        """`latest`, and the candidates running in shadow beside them (`shadow_on`), in the same round trip; a
        shadow that does not validate is left out (logged)."""
        wanted = sorted(set(names))
        if not wanted:
            return {}, {}
        found: dict[str, LabelSet | Unusable] = {}
        shadows: dict[str, LabelSet] = {}
        builtins = builtin_labelsets()
        keys = [LABELSET_KEY + name for name in wanted] + [LABELSET_KEY + name + SHADOW_SUFFIX for name in wanted]
        raws = self.client.mget(keys)
        for name, raw in zip(wanted, raws[len(wanted) :], strict=True):
            if raw is not None:
                shadow = self._cached(raw, f"the shadow of label set {name}", "not scored")
                if not isinstance(shadow, Unusable):  # hostile or stale: never scored
                    shadows[name] = shadow
        for name, raw in zip(wanted, raws[: len(wanted)], strict=True):
            if raw is None:  # none stored: the built-in set of that name, if labelq ships one
                if name in builtins:
                    found[name] = builtins[name]
                continue
            # a stored document is hostile input: not written by `put`, tampered with, or over this worker's limits
            found[name] = self._cached(raw, f"label set {name}", "requests naming it get invalid_label_set")
        return found, shadows

    def shadow_on(self, name: str) -> LabelSet | None:
        """Run the set's candidate in shadow: scored beside the live version on live traffic, never published.
        None when it has no candidate."""
        candidate = self.candidate(name)
        if candidate is None:
            return None
        body = candidate.model_dump_json(exclude={"version", "builtin"})
        self.client.set(LABELSET_KEY + name + SHADOW_SUFFIX, '{"version":0,"set":' + body + "}")
        return candidate

    def shadow_off(self, name: str) -> bool:
        return bool(self.client.delete(LABELSET_KEY + name + SHADOW_SUFFIX))

    def _cached(self, raw: bytes | str, what: str, consequence: str) -> LabelSet | Unusable:
        """Parse each stored version once: the MGET per batch stays, the validation does not. One that cannot be
        used is `Unusable`, logged once (`what` is unusable (why); `consequence`), not at every claim naming it."""
        if raw in self._parsed:
            self._parsed.move_to_end(raw)
            return self._parsed[raw]
        try:
            parsed: LabelSet | Unusable = _load(raw, self.limits)
        except Exception as exc:  # hostile input: whatever it is, it is that set's problem, never the batch's
            parsed = Unusable(first_problem(exc))
            log.error("%s is unusable (%s); %s", what, parsed, consequence)
        self._parsed[raw] = parsed
        while len(self._parsed) > self._cache_size:
            self._parsed.popitem(last=False)
        return parsed

    def names(self) -> list[str]:
        """Every set a request may name: the stored ones and the built-in ones."""
        stored = {n.decode() if isinstance(n, bytes) else str(n) for n in self.client.smembers(LABELSET_NAMES_KEY)}
        return sorted(stored | set(builtin_labelsets()))

    def stored(self, name: str) -> bool:
        return bool(self.client.exists(LABELSET_KEY + name))

    def delete(self, name: str) -> bool:
        keys = [
            LABELSET_KEY + name,
            LABELSET_KEY + name + ":version",
            LABELSET_KEY + name + CANDIDATE_SUFFIX,
            LABELSET_KEY + name + SHADOW_SUFFIX,
            *self.client.scan_iter(match=LABELSET_KEY + name + ":v*"),
        ]
        removed = self.client.delete(*keys)
        self.client.srem(LABELSET_NAMES_KEY, name)
        return bool(removed)


class Unusable(str):
    """Why a stored label set cannot be used."""


def first_problem(exc: Exception, whole: str = "") -> str:
    """A label set that does not validate, in one phrase: `field: message` of its first error (`whole` names the
    field when the error is about the set as a whole)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or whole
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    if isinstance(exc, RecursionError):
        return "not a stored label set (nested too deeply)"
    return f"not a stored label set ({type(exc).__name__})"


def limits_of(info: ValidationInfo) -> RequestLimits:
    """The limits a set is read under: the validation context's, else the defaults."""
    return info.context if isinstance(info.context, RequestLimits) else RequestLimits()


def _load(raw: bytes | str, limits: RequestLimits | None = None) -> LabelSet:
    stored = json.loads(raw)
    return LabelSet.model_validate({**stored["set"], "version": stored["version"]}, context=limits)


@functools.cache
def builtin_labelsets() -> dict[str, LabelSet]:
    """The label sets labelq ships (`worker/stream/builtin/*.json`, written by tools/fit_builtin_labelsets.py),
    by name: a request may name one with nothing stored; a stored set of the same name overrides it. A built-in
    set is version 0 (stored versions count from 1), so a result says which answered."""
    found = {}
    for entry in resources.files("worker.stream.builtin").iterdir():
        if entry.name.endswith(".json"):
            labelset = _load(entry.read_bytes())
            found[labelset.name] = labelset.model_copy(update={"builtin": True})
    return found
