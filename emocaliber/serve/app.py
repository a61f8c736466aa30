"""The demo page (Gradio): an image and a label set in; the five-part reasoning, the answer and its confidence out,
and, with an evaluation's metrics, what that confidence has meant on the benchmark.

Choices and why:
- The page handler is a generator: it reports progress (elapsed seconds) while the model generates in a worker
  thread, so a slow CPU answer never looks like a hung page. The queue runs one request at a time (one model,
  one set of weights) and holds ``queue_size`` more; Gradio shows a waiting request its place in the queue.
- The image arrives as a file, not through Gradio's image component, so that *this* project's loader
  (:func:`emocaliber.inference.load_image`: pixel limit from the header, processor size rules) decides what is
  accepted and its one-line reason is what the page shows. Every error stays in the page; the server goes on.
- Model text is HTML-escaped before it is shown: a response is data, never markup.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from emocaliber.inference import EmoCaliber, InputError, Prediction, load_image, resolve_candidates
from emocaliber.records import REASONING_PARTS
from emocaliber.serve.calibration import Calibration
from emocaliber.serve.config import ServeConfig
from emocaliber.tasks import list_tasks

logger = logging.getLogger(__name__)

#: Section headings for the five reasoning parts, in the contract's order.
PART_TITLES = {"element": "Visual elements", "human": "People", "context": "Context",
               "interaction": "Interaction", "analysis": "Analysis"}
POLL_SECONDS = 0.5

CSS = """
#message .error {color: #b42318; background: #fef3f2; border: 1px solid #fda29b; padding: 8px 12px;
  border-radius: 6px;}
#message .progress {color: #344054; padding: 8px 12px;}
.answer-box {border: 1px solid #d0d5dd; border-radius: 8px; padding: 12px 16px; margin-bottom: 12px;}
.answer-label {font-size: 1.6em; font-weight: 600;}
.confidence-bar {height: 14px; background: #eaecf0; border-radius: 7px; overflow: hidden; margin: 6px 0;}
.confidence-bar > div {height: 100%; background: #2e90fa;}
.reasoning-part h3 {margin: 10px 0 2px 0; font-size: 1.05em;}
.reasoning-part p {margin: 0; white-space: pre-wrap; overflow-wrap: anywhere;}
.calibration {margin-top: 10px; font-style: italic;}
.problems {color: #b54708;}
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def message_html(text: str, kind: str = "error") -> str:
    prefix = "Error: " if kind == "error" else ""
    return f'<div class="{kind}" data-kind="{kind}">{_esc(prefix + text)}</div>'


def result_html(pred: Prediction, calibration_sentence: str | None = None) -> str:
    """The answer, a confidence bar and the five reasoning parts as sections (missing parts say so)."""
    label = pred.label if pred.label is not None else "(no label: the answer names none of the candidates)"
    out = ['<div class="answer-box">', (f'<div>Answer</div><div class="answer-label" id="answer-label" '
                                        f'data-label="{_esc(pred.label or "")}">{_esc(label)}</div>')]
    if pred.confidence is not None:
        pct = 100 * pred.confidence
        out.append(f'<div id="answer-confidence" data-confidence="{pred.confidence:.4f}">Confidence '
                   f'<b>{pred.confidence:.2f}</b></div><div class="confidence-bar" role="meter" '
                   f'aria-valuemin="0" aria-valuemax="1" aria-valuenow="{pred.confidence:.4f}">'
                   f'<div style="width: {pct:.1f}%"></div></div>')
    else:
        out.append('<div id="answer-confidence" data-confidence="">No confidence stated</div>')
    if calibration_sentence:
        out.append(f'<div class="calibration" id="calibration">{_esc(calibration_sentence)}</div>')
    out.append(f'<div class="candidates">Candidates: {_esc(", ".join(pred.candidates))}</div>')
    if not pred.valid:
        out.append(f'<div class="problems">The response does not follow the answer format: '
                   f'{_esc("; ".join(pred.problems) or "incomplete")}</div>')
    out.append("</div>")
    for part in REASONING_PARTS:
        text = pred.reasoning.get(part)
        body = _esc(text) if text is not None else "<em>(missing from the response)</em>"
        out.append(f'<section class="reasoning-part" data-part="{part}"><h3>{PART_TITLES[part]}</h3>'
                   f"<p>{body}</p></section>")
    out.append(f'<details><summary>Raw response</summary><pre>{_esc(pred.raw)}</pre></details>')
    return "\n".join(out)


class Answerer:
    """The page's request handler around one loaded model (and optionally one evaluation's bins)."""

    def __init__(self, model: EmoCaliber, config: ServeConfig, calibration: Calibration | None = None):
        self.model = model
        self.config = config
        self.calibration = calibration
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")

    def prepare(self, image_path: str | None, task: str | None, custom: str | None):
        """(image, candidates keyword arguments, task for calibration) or :class:`InputError`."""
        if not image_path:
            raise InputError("no image: upload an image file or click one of the examples")
        try:
            image = load_image(image_path, pixel_limit=self.config.max_image_pixels)
        except InputError as e:  # name the upload as the user knows it, not the server's temp path
            raise InputError(str(e).replace(str(image_path), Path(image_path).name)) from None
        if custom and custom.strip():
            resolve_candidates(custom, None)
            return image, {"candidates": custom}, None
        if not task:
            raise InputError("no task: choose a task or type candidate labels")
        resolve_candidates(None, task)
        return image, {"task": task}, task

    def respond(self, image_path: str | None, task: str | None, custom: str | None) -> Iterator[tuple]:
        """Yields (message, result, preview, plot) updates: progress first, then the answer or an error. A
        method, not ``__call__``: Gradio streams only what it recognises as a generator function."""
        import gradio as gr

        try:
            image, which, cal_task = self.prepare(image_path, task, custom)
        except InputError as e:
            yield message_html(str(e)), "", None, gr.skip()
            return
        start = time.perf_counter()
        future = self._worker.submit(self.model.predict, image, **which, temperature=self.config.temperature,
                                     max_new_tokens=self.config.max_new_tokens,
                                     constrained=self.config.constrained)
        while not future.done():
            elapsed = time.perf_counter() - start
            yield message_html(f"Generating... {elapsed:.1f} s", "progress"), "", image, gr.skip()
            time.sleep(POLL_SECONDS)
        try:
            pred = future.result()
        except (InputError, ImportError) as e:
            yield message_html(str(e)), "", image, gr.skip()
            return
        except Exception as e:  # one failed request must not take the page down
            logger.exception("generation failed")
            yield message_html(f"generation failed ({type(e).__name__}: {e})"), "", image, gr.skip()
            return
        seconds = time.perf_counter() - start
        sentence, plot = None, gr.skip()
        if self.calibration is not None:
            if pred.confidence is not None:
                stat = self.calibration.lookup(cal_task, pred.confidence)
                sentence = stat.sentence(pred.confidence)
                if self.calibration.scope_for(cal_task) != cal_task:
                    sentence += (" (custom candidates: no task of its own in the evaluation)" if cal_task is None
                                 else f" ({cal_task} is not in this evaluation: all its tasks pooled)")
            else:
                sentence = "No confidence was stated, so there is no bin to look up."
            plot = self.calibration.figure(cal_task, pred.confidence)
        yield (message_html(f"Answered in {seconds:.1f} s.", "progress"), result_html(pred, sentence), image,
               plot)


def task_choices() -> list[str]:
    import emocaliber.synthemo  # noqa: F401  (its tasks are offered too)

    return [t.name for t in list_tasks()]


def build_app(model: EmoCaliber, config: ServeConfig, calibration: Calibration | None = None,
              examples: list[tuple[Path, str]] = ()) -> Any:
    """The Gradio Blocks of the page, queue configured; launch it with :func:`launch_kwargs`."""
    import gradio as gr

    answer = Answerer(model, config, calibration)
    with gr.Blocks(title="EmoCaliber") as demo:
        gr.Markdown(f"## EmoCaliber: which emotion might this image evoke, and how sure is the model?\n"
                    f"Model: `{_esc(model.name_or_path)}`. Upload an image (or click an example), choose a label "
                    "set, and ask.")
        with gr.Row():
            with gr.Column(scale=1):
                image_file = gr.File(label="Image file", type="filepath", elem_id="image-file")
                task = gr.Dropdown(task_choices(), value=config.default_task, label="Task (label set)",
                                   allow_custom_value=True, elem_id="task")
                custom = gr.Textbox(label="Or your own candidates, comma-separated (replaces the task's)",
                                    placeholder="joy, calm, fear", elem_id="custom")
                submit = gr.Button("Ask the model", variant="primary", elem_id="submit")
                if examples:
                    gr.Examples([[str(p), config.default_task] for p, _ in examples], inputs=[image_file, task],
                                example_labels=[name for _, name in examples], label="SynthEmo examples")
                preview = gr.Image(label="Image as the model sees it", interactive=False, height=220,
                                   elem_id="preview")
            with gr.Column(scale=2):
                message = gr.HTML(elem_id="message")
                result = gr.HTML(elem_id="result")
                if calibration is not None:
                    gr.Markdown("#### What a confidence has meant on the evaluation")
                plot = gr.Plot(show_label=False, elem_id="reliability",
                               value=calibration.figure(config.default_task) if calibration else None,
                               visible=calibration is not None)
                if calibration is not None:
                    gr.Markdown(f"Bins from `{_esc(calibration.source)}`: {_esc(calibration.note)}.")
        submit.click(answer.respond, inputs=[image_file, task, custom], outputs=[message, result, preview, plot],
                     concurrency_limit=1)
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    return demo


def launch_kwargs(config: ServeConfig, allowed: list[str]) -> dict[str, Any]:
    """Arguments of ``Blocks.launch``: loopback by default, upload size capped, no share link, no SSR (Node)."""
    import gradio as gr

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    return {"server_name": config.host, "server_port": config.port, "share": False, "ssr_mode": False,
            "max_file_size": int(config.max_upload_mb * 1024 * 1024), "allowed_paths": allowed,
            "show_error": True, "css": CSS, "theme": theme, "footer_links": [], "quiet": False}
