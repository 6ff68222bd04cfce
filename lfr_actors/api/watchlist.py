"""Watchlist entries over the API: enrol by image upload, list, get, approve, delete.

``POST /v1/deployments/{deployment_id}/entries`` takes ``multipart/form-data``: the text
fields of :class:`~lfr_actors.topology.schema.NewEntry` (identity and provenance, as a
watchlist file declares them too) and one to :data:`MAX_IMAGES` file parts named
``image`` (JPEG, PNG, BMP, WebP or TIFF; all of them together at most
:data:`MAX_IMAGE_BYTES`, each at most
:data:`~lfr_actors.enrolment.MAX_ENROL_PIXELS` as its header declares, checked before it
is decoded). Every image goes through the enrolment rules of the model layer
(one clear, large enough, frontal face), and one that fails refuses the whole upload;
what is kept is one embedding per image (each is a template the index matches against)
and the first image re-encoded as JPEG, shown to officers (so no EXIF data, a GPS
position say, is stored). The entry is *pending* until an authoriser other than the
person who added it approves it; only then is it searched.

Answers: 201 with the entry; 404 for an unknown deployment or entry; 409 for a closed
deployment, a reused entry id, self-approval (four eyes) or approving a deleted entry;
413 over the size limit or over :data:`MAX_PARTS` parts (refused as the part over it
arrives, without reading on); 415 for a body that is not multipart or an image part
that is not an image; 422 with the reason code when the image does not qualify
(``too_many_pixels``, ``unreadable``, ``no_face``, ``multiple_faces``,
``face_too_small``, ...), or with each bad field (at most :data:`MAX_LISTED_PROBLEMS`
listed, and how many more); 503 when this API process has no enrolment models attached.
A refused request stores nothing.

Decoding and enrolment run off the event loop, at most
:data:`MAX_CONCURRENT_ENROLMENTS` uploads at a time; the others wait their turn without
holding a thread.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from lfr_actors.api.auth import (
    PENDING_IMAGE_VIEWERS,
    principal,
    require_in_scope,
    require_role,
    unknown_deployment,
)
from lfr_actors.api.bodies import model_response, read_json_body
from lfr_actors.api.deployments import (
    NO_DEPLOYMENT,
    run_store,
    trimmed,
)
from lfr_actors.api.keys import AUDIT, DEPLOYMENTS, ENROL_SLOTS, ENROLLER
from lfr_actors.api.openapi import (
    BINARY,
    Body,
    body_problems,
    media,
    ok,
    operation,
    problem,
    query,
)
from lfr_actors.api.problems import ProblemError
from lfr_actors.api.schemas import Entry, EntryList
from lfr_actors.enrolment import (
    MAX_ENROL_PIXELS,
    Enroller,
    EnrolmentUnavailableError,
    combine,
)
from lfr_actors.errors import EnrolmentRejectedError, ImageError
from lfr_actors.models.images import ImageTooLargeError, check_pixels, sniff_format
from lfr_actors.plaintext import PLAIN
from lfr_actors.store.audit import Action
from lfr_actors.store.freshness import entry_is_stale, entry_stale_at
from lfr_actors.store.records import Enrolled, EntryRecord, EntryState
from lfr_actors.topology.schema import FORM_FIELDS, RULES_ERROR, NewEntry

MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""The most image bytes one upload takes (all its images together)."""
MAX_IMAGES = 5
"""The most photos of one person an upload takes."""
MAX_FIELD_BYTES = 4 * 1024
"""The largest text field accepted (500 characters at 4 bytes each, and room)."""
MAX_BODY_BYTES = MAX_IMAGE_BYTES + 64 * 1024
"""The largest upload: the image and the text fields with their multipart framing."""
MAX_JSON_BYTES = 16 * 1024
MAX_PARTS = 16
"""The most parts an upload may have: the nine text fields and five images, and room."""
MAX_LISTED_PROBLEMS = 10
"""The most invalid fields one refusal lists; it says how many more there were."""
MAX_CONCURRENT_ENROLMENTS = 2
"""Uploads decoded and enrolled at once; each can hold a few hundred MB while it runs."""


class DeleteBody(BaseModel):
    """Why an entry is deleted (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True, title="DeleteEntry")

    reason: Annotated[str, PLAIN] | None = Field(
        default=None, max_length=500, description="Why it is deleted."
    )


class EntryUpload(NewEntry):
    """The upload form as the document describes it: the text fields and the photos.

    Only the document uses this model; the upload itself is read part by part
    (:func:`_read_upload`), with its per-part and total size budgets.
    """

    model_config = ConfigDict(title="EntryUpload")

    image: list[
        Annotated[
            bytes,
            WithJsonSchema(
                {"type": "string", "format": "binary", "contentMediaType": "image/jpeg"}
            ),
        ]
    ] = Field(
        min_length=1,
        max_length=MAX_IMAGES,
        description=f"1 to {MAX_IMAGES} photos of the person, each a part named image: "
        f"JPEG, PNG, BMP, WebP or TIFF, {MAX_IMAGE_BYTES:,} bytes in all, one clear frontal "
        "face each. Each gives the entry a template; the first is shown to officers.",
    )


def entry_body(request: web.Request, entry: EntryRecord) -> Entry:
    """An entry as the API shows it, with its image's address (null once destroyed)."""
    image_url = request.app.router["entry_image"].url_for(
        deployment_id=entry.deployment_id, entry_id=entry.id
    )
    shown = str(image_url) if entry.image_type is not None else None
    now = request.app[DEPLOYMENTS].clock()
    freshness = {"stale": entry_is_stale(entry, now), "stale_at": entry_stale_at(entry)}
    return Entry.model_validate({**entry.as_dict(), "image_url": shown, **freshness})


def _ids(request: web.Request) -> tuple[str, str]:
    """The path's deployment and entry ids; a deployment outside the caller's scope is 404.

    Every watchlist route calls it first, so a scoped caller meets another deployment's
    entries exactly as it meets an unknown deployment.
    """
    deployment_id = request.match_info["deployment_id"]
    require_in_scope(request, deployment_id)
    return deployment_id, request.match_info.get("entry_id", "")


NOT_FOUND = problem("No such deployment or entry.")


# -- the upload -------------------------------------------------------------------------


class _Budget:
    """What is left of the upload's size limit, across all its parts."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise ProblemError(
                413,
                f"The upload is over {self.total:,} bytes, the most accepted (the image at "
                f"most {MAX_IMAGE_BYTES:,}).",
                max_bytes=self.total,
            )


async def _read_part(part: BodyPartReader, limit: int, what: str, budget: _Budget) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        budget.take(len(chunk))
        if size > limit:
            raise ProblemError(
                413,
                f"The {what} is {size:,} bytes or more; at most {limit:,} bytes are accepted.",
                max_bytes=limit,
            )
        chunks.append(chunk)


async def _read_upload(request: web.Request) -> tuple[dict[str, str], list[tuple[bytes, str]]]:
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        raise ProblemError(
            413,
            f"The body is {declared:,} bytes; an upload may be at most {MAX_BODY_BYTES:,} bytes "
            f"(the image at most {MAX_IMAGE_BYTES:,}).",
            max_bytes=MAX_BODY_BYTES,
        )
    if request.content_type != "multipart/form-data":
        raise ProblemError(
            415,
            "Enrol with a multipart/form-data body: the entry's text fields and the file "
            f"part 'image'; got {request.content_type!r}.",
        )
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise ProblemError(400, f"The multipart body cannot be read: {exc}.") from None
    fields: dict[str, str] = {}
    images: list[tuple[bytes, str]] = []
    image_budget = _Budget(MAX_IMAGE_BYTES)
    invalid: list[dict[str, str]] = []
    known = set(NewEntry.model_fields)
    budget = _Budget(MAX_BODY_BYTES)
    parts = 0
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            parts += 1
            if parts > MAX_PARTS:
                raise ProblemError(
                    413,
                    f"The upload has more than {MAX_PARTS} parts, the most accepted (the "
                    f"entry's {len(known)} text fields and up to {MAX_IMAGES} images).",
                    max_parts=MAX_PARTS,
                )
            if not isinstance(part, BodyPartReader):
                invalid.append({"name": "(body)", "reason": "nested multipart is not accepted"})
                continue
            name = part.name or ""
            if name == "image":
                data = await _read_part(part, MAX_IMAGE_BYTES, "image", budget)
                image_budget.take(len(data))
                label = f"image {len(images) + 1}"
                images.append((data, f"{label} {part.filename!r}" if part.filename else label))
            elif name in known:
                raw = await _read_part(part, MAX_FIELD_BYTES, f"field {name!r}", budget)
                if name in fields:
                    invalid.append({"name": name, "reason": "given more than once"})
                try:
                    fields[name] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    invalid.append({"name": name, "reason": "not UTF-8 text"})
            else:
                await _read_part(part, MAX_BODY_BYTES, f"part {name[:40]!r}", budget)
                invalid.append(
                    {
                        "name": name or "(unnamed part)",
                        "reason": "unknown field; the fields are: "
                        + ", ".join(sorted(known | {"image"})),
                    }
                )
    except (ValueError, HttpProcessingError) as exc:
        raise ProblemError(400, f"The multipart body is malformed: {exc}.") from None
    if not images:
        invalid.append({"name": "image", "reason": "required: the file part with the photo"})
    elif len(images) > MAX_IMAGES:
        invalid.append(
            {"name": "image", "reason": f"{len(images)} images; at most {MAX_IMAGES} per entry"}
        )
    if invalid:
        raise invalid_upload(invalid)
    return fields, images


def invalid_upload(invalid: list[dict[str, str]]) -> ProblemError:
    """The 422 for an upload's bad fields, listing at most :data:`MAX_LISTED_PROBLEMS`."""
    extra: dict[str, Any] = {"invalid_params": invalid[:MAX_LISTED_PROBLEMS]}
    if len(invalid) > MAX_LISTED_PROBLEMS:
        extra["more_invalid_params"] = len(invalid) - MAX_LISTED_PROBLEMS
    return ProblemError(422, "The upload has invalid fields.", **extra)


def _check_fields(fields: dict[str, str]) -> NewEntry:
    try:
        values: dict[str, Any] = dict(fields)
        # A form sends a field it leaves blank as empty text: read it as not given.
        for name in ("threshold", "legal_basis", "consent_ref", "test_subject"):
            if values.get(name) == "":
                del values[name]
        return NewEntry.model_validate(values, context=FORM_FIELDS)
    except ValidationError as exc:
        invalid: list[dict[str, str]] = []
        for e in exc.errors(include_url=False):
            if e["type"] == RULES_ERROR:
                # A rule across fields (a test subject's consent_ref, say): name each field.
                invalid.extend(
                    {"name": ".".join(str(p) for p in (*e["loc"], *v.path)), "reason": v.message}
                    for v in e["ctx"]["violations"]
                )
            else:
                name = ".".join(str(p) for p in e["loc"]) or "(body)"
                invalid.append({"name": name, "reason": e["msg"]})
        raise invalid_upload(invalid) from None


@operation(
    "Enrol an entry from a photo; it is inactive until an authoriser approves it.",
    description="Audited as entry.create. 422 with reason (too_many_pixels, unreadable, "
    "no_face, multiple_faces, face_too_small, ...) when the photo does not qualify; a photo "
    f"may declare at most {MAX_ENROL_PIXELS:,} pixels, checked from its header before it is "
    f"decoded. At most {MAX_PARTS} parts.",
    body=Body(EntryUpload, MAX_BODY_BYTES, media="multipart/form-data"),
    responses={
        201: ok(Entry, "The entry, pending approval."),
        400: problem("The multipart body is malformed."),
        404: NO_DEPLOYMENT,
        409: problem(
            "The deployment is closed, the entry id was used, or the entry's own threshold "
            "is looser than the store's threshold policy (policy_max)."
        ),
        413: problem("The upload is over the size limit or the part limit."),
        415: problem("Not multipart, or the image part is not an image."),
        422: problem("Invalid fields, or a photo that does not qualify."),
        503: problem("No enrolment models are attached to this API."),
    },
)
async def create_entry(request: web.Request) -> web.Response:
    """Enrol an entry from an uploaded image; it waits for an authoriser's approval."""
    deployment_id, _ = _ids(request)
    store = request.app[DEPLOYMENTS]
    record = await asyncio.to_thread(store.find, deployment_id)
    if record is None:
        raise unknown_deployment(deployment_id)
    if record.closed_at is not None:
        raise ProblemError(
            409,
            f"Refused: deployment {deployment_id!r} is closed; its watchlist was destroyed "
            "and takes no new entries.",
        )
    fields, images = await _read_upload(request)
    entry_fields = _check_fields(fields)
    if entry_fields.threshold is not None and entry_fields.threshold > record.threshold:
        raise ProblemError(
            422,
            "The upload has invalid fields.",
            invalid_params=[
                {
                    "name": "threshold",
                    "reason": f"an entry's own threshold may only be stricter (lower) than "
                    f"the deployment's, {record.threshold:g}",
                }
            ],
        )
    # A threshold looser than the store's policy is refused before minutes of enrolment.
    await run_store(store.check_entry_threshold, entry_fields.threshold)
    for image, image_name in images:
        if sniff_format(image) is None:
            raise ProblemError(
                415,
                f"The {image_name} is not an image: JPEG, PNG, BMP, WebP or TIFF expected "
                f"(it starts with {image[:8]!r}).",
            )
        _check_pixels(image, image_name)
    if await asyncio.to_thread(store.has_entry, deployment_id, entry_fields.id):
        raise ProblemError(
            409,
            f"Refused: deployment {deployment_id!r} already has (or had) an entry "
            f"{entry_fields.id!r}; entry ids are never reused.",
        )
    enroller = request.app[ENROLLER]
    if enroller is None:
        raise ProblemError(
            503,
            "This API process has no enrolment models attached; enrol through the API of "
            "`lfr up` or `lfr serve`.",
        )
    async with request.app[ENROL_SLOTS]:
        made = await _enrol_all(enroller, images)
    entry = await run_store(
        store.add_entry,
        deployment_id,
        trimmed(entry_fields),
        combine(made),
        actor=principal(request).actor,
    )
    location = request.app.router["entry"].url_for(deployment_id=deployment_id, entry_id=entry.id)
    return model_response(
        entry_body(request, entry), status=201, headers={"Location": str(location)}
    )


def _check_pixels(image: bytes, image_name: str) -> None:
    """Refuse, from its header alone, an image too large to decode (or of unknown size)."""
    try:
        check_pixels(image, name=image_name, max_pixels=MAX_ENROL_PIXELS, strict=True)
    except ImageTooLargeError as exc:
        raise _too_many_pixels(exc, image_name) from None
    except ImageError as exc:
        raise ProblemError(
            422, f"The {image_name} cannot be read: {exc}.", reason="unreadable", image=image_name
        ) from None


def _too_many_pixels(exc: ImageTooLargeError, image_name: str) -> ProblemError:
    return ProblemError(
        422,
        f"The {image_name} is {exc.width}x{exc.height}, {exc.width * exc.height:,} pixels; "
        f"an enrolment photo may have at most {MAX_ENROL_PIXELS:,}. Downscale it (a face "
        "photo needs far fewer) and upload it again.",
        reason="too_many_pixels",
        image=image_name,
        width=exc.width,
        height=exc.height,
        max_pixels=MAX_ENROL_PIXELS,
    )


async def _enrol_all(enroller: Enroller, images: list[tuple[bytes, str]]) -> list[Enrolled]:
    """Each image's template, enrolled off the event loop, in order; the first refusal ends it."""
    made: list[Enrolled] = []
    for image, image_name in images:
        try:
            made.append(await asyncio.to_thread(enroller, image, image_name))
        except EnrolmentRejectedError as exc:
            raise ProblemError(
                422,
                f"The {image_name} does not qualify for enrolment: {exc.detail}.",
                reason=exc.reason,
                image=image_name,
            ) from exc
        except ImageTooLargeError as exc:  # decoded larger than its header said
            raise _too_many_pixels(exc, image_name) from None
        except ImageError as exc:
            raise ProblemError(
                422,
                f"The {image_name} cannot be read: {exc}.",
                reason="unreadable",
                image=image_name,
            ) from exc
        except EnrolmentUnavailableError as exc:
            raise ProblemError(503, f"Enrolment is not available yet: {exc}.") from exc
    return made


# -- the other routes -------------------------------------------------------------------


@operation(
    "The deployment's watchlist entries, in the order added.",
    parameters=[
        query(
            "state",
            {"type": "string", "enum": [str(s) for s in EntryState]},
            "Only entries in this state.",
        )
    ],
    responses={
        200: ok(EntryList, "The entries."),
        400: problem("Invalid query parameters."),
        404: NO_DEPLOYMENT,
    },
)
async def list_entries(request: web.Request) -> web.Response:
    """The deployment's entries, optionally of one ``state``, in the order added."""
    deployment_id, _ = _ids(request)
    unknown = sorted(set(request.query) - {"state"})
    states = [str(s) for s in EntryState]
    raw = request.query.get("state")
    invalid = [{"name": n, "reason": "unknown parameter; known: state"} for n in unknown]
    if raw is not None and raw not in states:
        invalid.append({"name": "state", "reason": "one of " + ", ".join(states)})
    if invalid:
        raise ProblemError(400, "Invalid query parameters.", invalid_params=invalid)
    state = None if raw is None else EntryState(raw)
    entries = await run_store(request.app[DEPLOYMENTS].entries, deployment_id, state=state)
    return model_response(EntryList(entries=[entry_body(request, e) for e in entries]))


@operation(
    "One watchlist entry (no image; see image_url).",
    responses={200: ok(Entry, "The entry."), 404: NOT_FOUND},
)
async def get_entry(request: web.Request) -> web.Response:
    """One entry (no image; see ``image_url``)."""
    deployment_id, entry_id = _ids(request)
    entry = await run_store(request.app[DEPLOYMENTS].entry, deployment_id, entry_id)
    return model_response(entry_body(request, entry))


@operation(
    "The entry's photo (JPEG); never cached; each view is audited.",
    description="While the entry waits for approval, only watchlist managers, authorisers "
    "and admins see its photo (403 for the other roles).",
    responses={
        200: media("image/jpeg", "The photo.", BINARY),
        404: NOT_FOUND,
        410: problem("Destroyed: the entry was deleted or its deployment closed."),
    },
)
async def get_entry_image(request: web.Request) -> web.Response:
    """The entry's enrolment image (JPEG), never cached; each view is audited first.

    403 for a viewer or adjudicator while the entry waits for approval (only
    :data:`~lfr_actors.api.auth.PENDING_IMAGE_VIEWERS` see it then); 410 Gone once the entry
    was deleted or its deployment closed (the image is destroyed).
    """
    deployment_id, entry_id = _ids(request)
    store = request.app[DEPLOYMENTS]
    entry = await run_store(store.entry, deployment_id, entry_id)
    if entry.state is EntryState.PENDING:
        require_role(request, PENDING_IMAGE_VIEWERS, "The photo of an entry not yet approved")
    found = await run_store(store.entry_image, deployment_id, entry_id)
    if found is None:
        raise ProblemError(
            410,
            f"The image of entry {entry_id!r} was destroyed when the entry was deleted or "
            "its deployment closed.",
        )
    await asyncio.to_thread(
        request.app[AUDIT].append,
        principal(request).actor,
        Action.ENTRY_VIEW,
        f"{deployment_id}/{entry_id}",
        {"part": "image"},
    )
    data, media_type = found
    return web.Response(body=data, content_type=media_type, headers={"Cache-Control": "no-store"})


@operation(
    "Approve a pending entry: a second person with the authoriser role (audited as entry.approve).",
    responses={
        200: ok(Entry, "It was already approved."),
        201: ok(Entry, "Approved: the entry is active."),
        400: problem("A body was sent; approval takes none."),
        404: NOT_FOUND,
        409: problem("Self-approval (four eyes), a deleted entry, or a closed deployment."),
    },
)
async def approve_entry(request: web.Request) -> web.Response:
    """Approve a pending entry (four eyes); 201 when approved now, 200 if it already was."""
    deployment_id, entry_id = _ids(request)
    if request.can_read_body:
        raise ProblemError(400, "Approval takes no body; the approver is the token's holder.")
    approval = await run_store(
        request.app[DEPLOYMENTS].approve_entry,
        deployment_id,
        entry_id,
        actor=principal(request).actor,
    )
    return model_response(
        entry_body(request, approval.entry), status=201 if approval.changed else 200
    )


@operation(
    "Delete an entry: it is no longer searched; image and embeddings are wiped (audited as "
    "entry.delete).",
    body=Body(DeleteBody, MAX_JSON_BYTES, required=False),
    responses={
        200: ok(Entry, "The deleted entry."),
        404: NOT_FOUND,
        409: problem("The deployment is closed."),
        **body_problems(MAX_JSON_BYTES),
    },
)
async def delete_entry(request: web.Request) -> web.Response:
    """Delete an entry: it stops being searched and its image and embeddings are wiped."""
    deployment_id, entry_id = _ids(request)
    reason = None
    if request.can_read_body:
        body = await read_json_body(request, DeleteBody, max_bytes=MAX_JSON_BYTES)
        reason = (body.reason or "").strip() or None
    entry = await run_store(
        request.app[DEPLOYMENTS].delete_entry,
        deployment_id,
        entry_id,
        actor=principal(request).actor,
        reason=reason,
    )
    return model_response(entry_body(request, entry))
