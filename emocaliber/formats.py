"""Conversions between records and the formats other tools read and write.

* TRL (SFT/GRPO): :func:`to_trl_prompt_completion`, :func:`to_trl_messages` and back, :func:`record_from_trl`.
  Rows carry the record's fields as extra columns (``ground_truth`` and ``candidates`` reach reward functions as
  keyword lists); the image path column is ``image_path`` because TRL treats a column named ``image`` as pixels.
* verl parquet (stage-3 GRPO; columns as in volcengine/verl's ``docs/preparation/prepare_data.rst``):
  :func:`to_verl_row`, :func:`write_verl_parquet`, :func:`read_verl_parquet`, :func:`record_from_verl`.
* The released test file (``input_data/test_8k.jsonl``): :func:`to_released_test`, :func:`from_released_test`.
* The VEC-CoT stage files: :func:`to_vec_cot`, :func:`from_vec_cot`. Their schema is not public, so the reader
  accepts the three shapes ms-swift reads, as assumed in ``docs``: (1) ``messages`` + ``images`` (``<image>`` in
  the user text), (2) ``conversations`` with Qwen content lists (``{"type": "image", "image": PATH}``, as the
  test file), (3) ShareGPT ``conversations`` with ``from``/``value`` + ``images``. ``task``, ``candidates`` and
  ``ground_truth`` (or ``label``) are read when present; otherwise candidates come from the prompt's list, the
  task from the image folder and candidate set, and the label from the answer (VEC-CoT kept only correct CoTs).
  Reasoning and confidence come from the assistant text through :func:`emocaliber.parsing.parse_response`; an
  answer other than the label is kept as ``Record.answer`` (a model's own response), as in the TRL round trip.

Prompt text always comes from :mod:`emocaliber.prompts`, except for text a released file wrote itself: an imported
row's question is kept verbatim in ``meta["prompt"]``, and its assistant text in ``meta["target"]`` when the
project's rendering of the parsed fields would not give it back byte for byte (the release writes ``Contentment``,
``0.875`` and newlines between the parts; the rendering gives ``contentment``, ``0.88`` and none). Training
(:func:`training_messages`) and the exporters (``keep_prompt``) use that text verbatim, so a model trained on a
VEC-CoT file learns the release's own question and answers, and a round trip is exact. :func:`released_prompt` and
:func:`released_target` decide when the kept text still describes the record; records the project generated itself
carry neither and are always rendered from their fields.
Released image paths are ``images/<dataset folder>/<original path>``; records drop the ``images/`` prefix, so
the image root is the folder that holds ``images/``'s content.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from emocaliber.parsing import parse_response
from emocaliber.prompts import SYSTEM_PROMPT, build_messages, record_prompt, record_target
from emocaliber.records import (
    REASONING_PARTS,
    Record,
    RecordError,
    atomic_output,
    iter_jsonl,
    resolve_image,
    safe_relpath,
)
from emocaliber.sources.common import SkipLog
from emocaliber.tasks import canonical_task_name, get_task, list_tasks

IMAGE_PREFIX = "images/"
DATA_SOURCE = "emocaliber"
ABILITY = "emotion"
#: Record fields exported as extra columns / extra_info, enough to rebuild the record.
RECORD_COLUMNS = ("id", "task", "image_path", "candidates", "ground_truth", "split", "source")
#: Dataset folder names (ours and the release's) -> source dataset, to infer a task from an image path.
FOLDER_SOURCES = {"FI": "FI", "emotion_dataset": "FI", "EmoSet-118K": "EmoSet", "EmoSet": "EmoSet",
                  "WebEmo": "WebEmo", "WEBEmo": "WebEmo", "Abstract": "Abstract", "testImages_abstract": "Abstract",
                  "ArtPhoto": "ArtPhoto", "testImages_artphoto": "ArtPhoto", "UnbiasedEmo": "UnbiasedEmo",
                  "UnBiasedEmo": "UnbiasedEmo"}
_CANDIDATE_LIST = re.compile(r"from (\[[^\[\]]*\])")


class FormatError(ValueError):
    """A row cannot become a record; ``reason`` is a :data:`emocaliber.sources.common.REASONS` key."""

    def __init__(self, message: str, reason: str = "invalid_record") -> None:
        super().__init__(message)
        self.reason = reason


# --- shared helpers ------------------------------------------------------------------------------------------


def load_image(record: Record, image_root: str | os.PathLike) -> Image.Image:
    """The record's image as a loaded RGB PIL image (file closed)."""
    with Image.open(resolve_image(image_root, record.image)) as im:
        return im.convert("RGB")


def record_columns(record: Record) -> dict[str, Any]:
    return {"id": record.id, "task": record.task, "image_path": record.image, "candidates": list(record.candidates),
            "ground_truth": record.ground_truth, "split": record.split, "source": record.source}


def _prompt_text(record: Record, with_confidence: bool, keep_prompt: bool) -> str:
    if keep_prompt and isinstance(record.meta.get("prompt"), str):
        return record.meta["prompt"]
    return record_prompt(record, with_confidence=with_confidence)


def released_prompt(record: Record, *, with_confidence: bool) -> str | None:
    """The question a released file asked for this record, if it fits the stage: ``None`` when the record has none
    or when it asks for a ``<confidence>`` and ``with_confidence`` is false (or the reverse), e.g. a stage-1
    VEC-CoT record given a confidence target later; the project's prompt is then the one that fits."""
    prompt = record.meta.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or ("<confidence>" in prompt) != with_confidence:
        return None
    return prompt


def released_target(record: Record, *, with_confidence: bool) -> str | None:
    """The released assistant text of this record (``meta["target"]``), if it still states exactly the record's
    reasoning, answer and confidence (and a confidence only when ``with_confidence``); otherwise ``None``.

    A tool that changes a field (a new confidence target, another answer) thus never trains on stale text: the
    record is rendered from its fields again.
    """
    text = record.meta.get("target")
    if not isinstance(text, str) or ("<confidence>" in text) != with_confidence:
        return None
    try:
        reasoning, confidence, answer = _target_fields(text, record.candidates)
    except FormatError:
        return None
    same = (reasoning == record.reasoning and answer == (record.answer or record.ground_truth)
            and confidence == (record.confidence if with_confidence else None))
    return text if same else None


def training_messages(record: Record, *, with_confidence: bool, system_prompt: str | None = SYSTEM_PROMPT,
                      target: bool = True, image: Any = None) -> list[dict[str, Any]]:
    """The chat messages a record is trained on: :func:`emocaliber.prompts.build_messages`, with the released
    question and assistant text verbatim where :func:`released_prompt` / :func:`released_target` allow."""
    return build_messages(record, with_confidence=with_confidence, system_prompt=system_prompt, target=target,
                          image=image, prompt_text=released_prompt(record, with_confidence=with_confidence),
                          target_text=released_target(record, with_confidence=with_confidence) if target else None)


def _target_fields(text: str, candidates: list[str]) -> tuple[dict[str, str] | None, float | None, str | None]:
    """(reasoning, confidence, answer) from an assistant text; raises FormatError for a half-formed one."""
    parsed = parse_response(text, candidates, mode="strict")
    reasoning = None
    if "<think>" in text:
        missing = [p for p in REASONING_PARTS if p not in parsed.reasoning]
        if missing:
            raise FormatError(f"assistant text lacks reasoning part(s) {missing}: {text[:80]!r}")
        reasoning = {p: parsed.reasoning[p] for p in REASONING_PARTS}
    confidence = None
    if "<confidence>" in text:
        confidence = parsed.confidence
        if confidence is None or not 0 < confidence < 1:
            raise FormatError(f"assistant confidence must be a number strictly between 0 and 1: {text[-60:]!r}")
    return reasoning, confidence, parsed.label


def _match_candidate(value: object, candidates: list[str], what: str) -> str:
    if isinstance(value, str):
        for c in candidates:
            if c.lower() == value.strip().lower():
                return c
    raise FormatError(f"{what} {value!r} is not one of the candidates {candidates}", "unknown_label")


def _record_from_columns(cols: dict[str, Any], *, reasoning=None, confidence=None, answer=None,
                         meta=None) -> Record:
    missing = [k for k in RECORD_COLUMNS if cols.get(k) is None]
    if missing:
        raise FormatError(f"row lacks field(s) {missing}")
    try:
        return Record(id=cols["id"], task=cols["task"], image=cols["image_path"], candidates=list(cols["candidates"]),
                      ground_truth=cols["ground_truth"], split=cols["split"], source=cols["source"],
                      reasoning=reasoning, confidence=confidence, answer=answer, meta=meta or {})
    except KeyError as e:
        raise FormatError(str(e.args[0]), "unknown_task") from None
    except RecordError as e:
        raise FormatError(str(e)) from None


def _text_of(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise FormatError(f"message content must be a string or a list of parts, got {type(content).__name__}")


# --- TRL -----------------------------------------------------------------------------------------------------


def to_trl_prompt_completion(record: Record, *, with_confidence: bool, image_root: str | os.PathLike,
                             system_prompt: str | None = SYSTEM_PROMPT, completion: bool = True) -> dict[str, Any]:
    """A TRL conversational prompt-completion row: ``prompt`` (system + user with ``{"type": "image"}`` and the
    question), ``completion`` (the assistant target; omit with ``completion=False`` for GRPO), ``images``. An
    imported record's own question and assistant text are used verbatim (:func:`training_messages`)."""
    messages = training_messages(record, with_confidence=with_confidence, system_prompt=system_prompt,
                                 target=completion)
    row: dict[str, Any] = {"prompt": messages[:-1] if completion else messages}
    if completion:
        row["completion"] = messages[-1:]
    row["images"] = [load_image(record, image_root)]
    return row | record_columns(record)


def to_trl_messages(record: Record, *, with_confidence: bool, image_root: str | os.PathLike,
                    system_prompt: str | None = SYSTEM_PROMPT) -> dict[str, Any]:
    """A TRL conversational language-modelling row: ``messages`` (with the assistant target) and ``images``."""
    messages = training_messages(record, with_confidence=with_confidence, system_prompt=system_prompt)
    return {"messages": messages, "images": [load_image(record, image_root)]} | record_columns(record)


def record_from_trl(row: dict[str, Any]) -> Record:
    """Rebuild a record from a TRL row made here (meta is not exported). The question must be the one
    :mod:`emocaliber.prompts` writes for the record; the reasoning, confidence and answer come from the target."""
    messages = row["messages"] if "messages" in row else list(row["prompt"]) + list(row.get("completion") or [])
    record = _record_from_columns(row)
    user = next((m for m in messages if m.get("role") == "user"), None)
    question = _text_of(user["content"]) if user else None
    if question not in (record_prompt(record, with_confidence=w) for w in (True, False)):
        raise FormatError(f"row {record.id!r}: the user text is not the emocaliber prompt for its candidates")
    assistant = next((m for m in messages if m.get("role") == "assistant"), None)
    if assistant is None:
        return record
    reasoning, confidence, answer = _target_fields(_text_of(assistant["content"]), record.candidates)
    return _record_from_columns(row, reasoning=reasoning, confidence=confidence, answer=answer)


# --- verl parquet --------------------------------------------------------------------------------------------


def _verl_schema(embed_images: bool):
    import pyarrow as pa

    image = (pa.struct([("bytes", pa.binary()), ("path", pa.string())]) if embed_images
             else pa.struct([("image", pa.string())]))
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", pa.list_(image)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("index", pa.int64())] + [
            (k, pa.list_(pa.string()) if k == "candidates" else pa.string()) for k in RECORD_COLUMNS])),
    ])


def to_verl_row(record: Record, *, index: int, image_root: str | os.PathLike, with_confidence: bool = True,
                data_source: str = DATA_SOURCE, system_prompt: str | None = SYSTEM_PROMPT,
                embed_images: bool = True, keep_prompt: bool = False) -> dict[str, Any]:
    """One verl RL row. The user text starts with one ``<image>`` per image (verl asserts the counts match);
    images are ``{"bytes", "path"}`` dicts (portable) or, with ``embed_images=False``, ``{"image": abs path}``,
    which ``qwen_vl_utils.fetch_image`` reads. Register ``data_source`` with verl's reward routing."""
    path = resolve_image(image_root, record.image)
    image = {"bytes": path.read_bytes(), "path": record.image} if embed_images else {"image": str(path)}
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompt.append({"role": "user", "content": "<image>" + _prompt_text(record, with_confidence, keep_prompt)})
    return {
        "data_source": data_source,
        "prompt": prompt,
        "images": [image],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": record.ground_truth},
        "extra_info": {"index": index} | record_columns(record),
    }


def write_verl_parquet(records: Iterable[Record], path: str | os.PathLike, *, image_root: str | os.PathLike,
                       batch_size: int = 256, embed_images: bool = True, **row_kwargs: Any) -> int:
    """Write records as a verl parquet file in batches (image bytes never all in memory); returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _verl_schema(embed_images)
    n = 0
    batch: list[dict[str, Any]] = []
    with atomic_output(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for record in records:
            batch.append(to_verl_row(record, index=n, image_root=image_root, embed_images=embed_images, **row_kwargs))
            n += 1
            if len(batch) >= batch_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch or n == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    return n


def read_verl_parquet(path: str | os.PathLike, batch_size: int = 256) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        yield from batch.to_pylist()


def record_from_verl(row: dict[str, Any]) -> Record:
    """Rebuild a record from a verl row made here; the ground truth is ``reward_model.ground_truth``."""
    cols = dict(row["extra_info"]) | {"ground_truth": row["reward_model"]["ground_truth"]}
    user = next((m["content"] for m in row["prompt"] if m["role"] == "user"), "")
    if user.count("<image>") != len(row["images"]):
        raise FormatError(f"row {cols.get('id')!r}: {user.count('<image>')} <image> tokens for "
                          f"{len(row['images'])} images")
    return _record_from_columns(cols)


# --- released VECBench test file and VEC-CoT stage files -----------------------------------------------------


def _release_path(record: Record, image_prefix: str) -> str:
    original = record.meta.get("image_original")
    return original if isinstance(original, str) else image_prefix + record.image


def _user_message(record: Record, text: str, image_prefix: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image", "image": _release_path(record, image_prefix)},
                                        {"type": "text", "text": text}]}


def _extra(record: Record) -> dict[str, Any]:
    extra = record.meta.get("released_extra")
    return dict(extra) if isinstance(extra, dict) else {}


def to_released_test(record: Record, *, with_confidence: bool = True, image_prefix: str = IMAGE_PREFIX,
                     keep_prompt: bool = True) -> dict[str, Any]:
    """A row of the released ``test_8k.jsonl``: Qwen-style ``conversations`` with the image path in the image
    part, plus ``task``, ``candidates``, ``ground_truth`` (and any other fields the imported row had)."""
    text = _prompt_text(record, with_confidence, keep_prompt)
    return {"conversations": [_user_message(record, text, image_prefix)], "task": record.task,
            "candidates": list(record.candidates), "ground_truth": record.ground_truth} | _extra(record)


def to_vec_cot(record: Record, *, style: str = "messages", with_confidence: bool, image_prefix: str = IMAGE_PREFIX,
               keep_prompt: bool = True) -> dict[str, Any]:
    """A VEC-CoT-style SFT row for ms-swift: ``style="messages"`` (``messages`` + ``images``, ``<image>`` in the
    user text) or ``"conversations"`` (Qwen content lists). The record's fields ride along for traceability.
    With ``keep_prompt`` an imported record's own question and assistant text are written back as they were."""
    text = _prompt_text(record, with_confidence, keep_prompt)
    target = (keep_prompt and released_target(record, with_confidence=with_confidence)
              or record_target(record, with_confidence=with_confidence))
    fields = {"id": record.id, "task": record.task, "candidates": list(record.candidates),
              "ground_truth": record.ground_truth}
    if style == "messages":
        return {"messages": [{"role": "user", "content": "<image>" + text},
                             {"role": "assistant", "content": target}],
                "images": [_release_path(record, image_prefix)]} | fields | _extra(record)
    if style == "conversations":
        return {"conversations": [_user_message(record, text, image_prefix),
                                  {"role": "assistant", "content": [{"type": "text", "text": target}]}]
                } | fields | _extra(record)
    raise ValueError(f"style must be 'messages' or 'conversations', got {style!r}")


def _chat(row: dict[str, Any]) -> tuple[str | None, str, str | None]:
    """(image path, user text without placeholders, assistant text) of any of the three chat shapes."""
    if "messages" in row:
        turns = [(m.get("role"), m.get("content")) for m in row["messages"]]
    elif "conversations" in row:
        roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
        turns = [(roles.get(m.get("role", m.get("from"))), m.get("content", m.get("value")))
                 for m in row["conversations"]]
    else:
        raise FormatError("row has neither 'messages' nor 'conversations'")
    user = next((content for role, content in turns if role == "user"), None)
    if user is None:
        raise FormatError("row has no user turn")
    image = None
    if isinstance(user, list):
        image = next((p.get("image") for p in user if isinstance(p, dict) and p.get("type") == "image"), None)
    elif isinstance(row.get("images"), list) and row["images"]:
        image = row["images"][0]
        image = image.get("path") if isinstance(image, dict) else image
    text = _text_of(user)
    if isinstance(user, str):  # messages/ShareGPT shapes mark the image with a placeholder in the text
        text = text.replace("<image>", "", 1)
    assistant = next((_text_of(c) for role, c in turns if role == "assistant"), None)
    return image, text, assistant


def _relative_image(path: object, image_prefix: str) -> tuple[str, bool]:
    """(path relative to the image root, whether the original differs from prefix + that path)."""
    if not isinstance(path, str) or not path:
        raise FormatError(f"no image path in the row (got {path!r})", "missing_image")
    p = path.replace("\\", "/")
    if p.startswith(image_prefix):
        rel = p[len(image_prefix):]
    elif "/" + image_prefix in p:
        rel = p.split("/" + image_prefix, 1)[1]
    else:
        rel = p
    try:
        rel = safe_relpath(rel)
    except RecordError as e:
        raise FormatError(f"{e} (expected {image_prefix}<dataset folder>/...)", "path_escapes_root") from None
    return rel, image_prefix + rel != path


def _infer_task(rel: str, candidates: list[str]) -> str:
    source = FOLDER_SOURCES.get(rel.split("/", 1)[0])
    matches = [t.name for t in list_tasks() if set(t.labels) == set(candidates)
               and (source is None or t.source == source)]
    if len(matches) != 1:
        raise FormatError(f"cannot tell the task of {rel!r} with candidates {candidates} "
                          f"(matches: {matches}); add a 'task' field", "unknown_task")
    return matches[0]


def _candidates(row: dict[str, Any], text: str) -> list[str]:
    cands = row.get("candidates")
    if cands is None and (m := _CANDIDATE_LIST.search(text)):
        try:
            cands = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            cands = None
    if not (isinstance(cands, list) and cands and all(isinstance(c, str) for c in cands)):
        raise FormatError("no 'candidates' list in the row and none found in the prompt")
    return cands


def _from_chat_row(row: dict[str, Any], *, split: str, image_prefix: str, known: set[str]) -> Record:
    if not isinstance(row, dict):
        raise FormatError(f"a row must be a JSON object, got {type(row).__name__}")
    image, text, assistant = _chat(row)
    rel, differs = _relative_image(image, image_prefix)
    candidates = _candidates(row, text)
    try:
        task = canonical_task_name(row["task"]) if "task" in row else _infer_task(rel, candidates)
    except KeyError as e:
        raise FormatError(str(e.args[0]), "unknown_task") from None
    reasoning = confidence = answer = None
    if assistant is not None:
        reasoning, confidence, answer = _target_fields(assistant, candidates)
    label = row.get("ground_truth", row.get("label", answer))
    ground_truth = _match_candidate(label, candidates, "ground truth")
    parts = rel.split("/", 1)
    meta: dict[str, Any] = {"prompt": text}
    if differs:
        meta["image_original"] = image
    extra = {k: v for k, v in row.items() if k not in known}
    if extra:
        meta["released_extra"] = extra
    cols = {"id": row.get("id") or f"{task}/{parts[-1]}", "task": task, "image_path": rel,
            "candidates": candidates, "ground_truth": ground_truth, "split": split,
            "source": get_task(task).source}
    # An assistant answer other than the label (a model's own response, as stage-2 records may carry) is kept as
    # the record's answer; Record drops it when it equals the label.
    record = _record_from_columns(cols, reasoning=reasoning, confidence=confidence, answer=answer, meta=meta)
    if assistant is not None and assistant != record_target(record, with_confidence=confidence is not None):
        record.meta["target"] = assistant  # the rendering would not give it back: keep the release's text
    return record


def from_released_test(row: dict[str, Any], *, image_prefix: str = IMAGE_PREFIX) -> Record:
    """A record (split ``test``) from a row of the released test file; see the module docstring."""
    return _from_chat_row(row, split="test", image_prefix=image_prefix,
                          known={"conversations", "id", "task", "candidates", "ground_truth"})


def from_vec_cot(row: dict[str, Any], *, image_prefix: str = IMAGE_PREFIX, split: str = "train") -> Record:
    """A record from a VEC-CoT stage row in any of the three accepted shapes (see the module docstring)."""
    return _from_chat_row(row, split=split, image_prefix=image_prefix,
                          known={"messages", "conversations", "images", "id", "task", "candidates", "ground_truth",
                                 "label"})


def read_released(path: str | os.PathLike, skips: SkipLog, *, kind: str,
                  image_prefix: str = IMAGE_PREFIX) -> Iterator[Record]:
    """Records from a released JSONL file (``kind`` "test" or "cot"); a bad line is counted with file:line.

    A test item whose id (task and image) was already read is counted as a duplicate and skipped: scored twice,
    it would weigh double. CoT files keep repeats, which may be deliberate extra rationales for one image.
    """
    convert = from_released_test if kind == "test" else from_vec_cot
    errors: list[str] = []
    group = Path(path).name
    first_line: dict[str, int] = {}

    def flush() -> None:
        while errors:
            where, _, message = errors.pop(0).partition(": ")
            skips.add("malformed_line", group, where, message + "; line skipped")

    for lineno, row in iter_jsonl(path, errors=errors):
        flush()
        try:
            record = convert(row, image_prefix=image_prefix)
        except FormatError as e:
            skips.add(e.reason, group, f"{path}:{lineno}", str(e))
            continue
        if kind == "test":
            if record.id in first_line:
                skips.add("duplicate", group, f"{path}:{lineno}",
                          f"id {record.id!r} was read at line {first_line[record.id]}; line skipped")
                continue
            first_line[record.id] = lineno
        yield record
    flush()


# --- whole files ---------------------------------------------------------------------------------------------

EXPORT_FORMATS = ("released", "verl", "swift-messages", "conversations")


def iter_record_file(path: str | os.PathLike) -> Iterator[Record]:
    """Records of a JSONL file one at a time (exports of large corpora stay flat in memory); a bad line raises
    :class:`RecordError` naming file and line."""
    for lineno, obj in iter_jsonl(path):
        try:
            yield Record.from_dict(obj)
        except RecordError as e:
            raise RecordError(f"{path}:{lineno}: {e}") from None


def import_released_files(out: str | os.PathLike, *, test: str | os.PathLike | None = None,
                          cot: Iterable[str | os.PathLike] = (), image_prefix: str = IMAGE_PREFIX,
                          skips: SkipLog | None = None) -> tuple[dict[str, int], SkipLog]:
    """Convert the released test file (to ``<out>/test.jsonl``) and VEC-CoT files (to ``<out>/<name>.jsonl``,
    split ``train``) into records; returns rows written per output file and the skip log."""
    from emocaliber.records import write_jsonl

    skips = skips or SkipLog()
    out = Path(out)
    written: dict[str, int] = {}
    jobs = ([(Path(test), "test", out / "test.jsonl")] if test else []) + [
        (Path(p), "cot", out / Path(p).name) for p in cot]
    names = [dest.name for *_, dest in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"two inputs would write the same output file: {names}")
    for src, kind, dest in jobs:
        written[dest.name] = write_jsonl(dest, read_released(src, skips, kind=kind, image_prefix=image_prefix))
    return written, skips


def export_records(records: Iterable[Record], fmt: str, out: str | os.PathLike, *,
                   image_root: str | os.PathLike | None = None, with_confidence: bool = True,
                   image_prefix: str = IMAGE_PREFIX, data_source: str = DATA_SOURCE) -> int:
    """Write records as one of :data:`EXPORT_FORMATS`; returns the row count. ``verl`` needs ``image_root``."""
    from emocaliber.records import write_jsonl

    if fmt == "verl":
        if image_root is None:
            raise ValueError("the verl export embeds image bytes: give image_root")
        return write_verl_parquet(records, out, image_root=image_root, with_confidence=with_confidence,
                                  data_source=data_source)
    if fmt == "released":
        return write_jsonl(out, (to_released_test(r, with_confidence=with_confidence, image_prefix=image_prefix)
                                 for r in records))
    if fmt in ("swift-messages", "conversations"):
        style = "messages" if fmt == "swift-messages" else "conversations"
        return write_jsonl(out, (to_vec_cot(r, style=style, with_confidence=with_confidence,
                                            image_prefix=image_prefix) for r in records))
    raise ValueError(f"unknown export format {fmt!r}; use one of {EXPORT_FORMATS}")
