"""The audit as a page to look at: each pair of copies side by side, each suspect label with the label it has and
the one it looks like, each odd image, as thumbnails in one self-contained HTML file beside audit.json."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2

from automl_img.data.audit import KIND_TITLES, KINDS, AuditReport
from automl_img.data.decode import UnreadableImage, read_image
from automl_img.outputs.html_report import html_page, html_table

SHOWN = 60  # of each list; audit.json holds them all
THUMBNAIL = 112  # px, the longer side


def write_audit_page(report: AuditReport, target: Path) -> Path:
    root = Path(report.root)
    counts = report.class_counts
    sections = [
        f"<h1>{html.escape(f'automl-img audit: {root}')}</h1>",
        f"<p>{report.images} images in {len(counts)} classes, audited in {report.seconds:.0f} s. Every finding, "
        "with its numbers, is in audit.json; the files to leave out are in exclusions.txt.</p>",
        html_table(["class", "images"], [[name, n] for name, n in counts.items()], "facts"),
    ]
    if report.part_counts:
        sections.append(html_table(["part", "images"], [[p, n] for p, n in report.part_counts.items()], "facts"))
    for kind in KINDS:
        pairs = report.of_kind(kind)
        cards = [
            _card(
                [root / pair.first, root / pair.second],
                f"{_where(pair.first, pair.first_class, pair.first_part)} ~ "
                f"{_where(pair.second, pair.second_class, pair.second_part)}, {pair.apart}",
            )
            for pair in pairs[:SHOWN]
        ]
        sections.append(_section(KIND_TITLES[kind].capitalize(), len(pairs), cards))
    cards = [
        _card(
            [root / s.path],
            f"{s.path}: labelled {s.given} ({s.given_probability:.2f}), looks like {s.likely} "
            f"({s.likely_probability:.2f})",
        )
        for s in report.label_suspects[:SHOWN]
    ]
    sections.append(_section(f"Likely label errors ({report.label_check})", len(report.label_suspects), cards))
    cards = [_card([root / o.path], f"{o.path}: {o.reason}") for o in report.oddities[:SHOWN]]
    sections.append(_section("Odd images", len(report.oddities), cards))
    if report.unreadable:
        rows = [[path, reason] for path, reason in report.unreadable]
        sections.append(f"<h2>Unreadable or skipped ({len(rows)})</h2>" + html_table(["file", "why"], rows, "facts"))
    target.write_text(html_page(f"automl-img audit: {root.name}", "\n".join(sections)), encoding="utf-8")
    return target


def _where(path: str, class_name: str, part: str | None) -> str:
    return f"{path} ({class_name}{', ' + part if part else ''})"


def _section(title: str, found: int, cards: list[str]) -> str:
    shown = f", the first {len(cards)} shown" if len(cards) < found else ""
    body = f'<div class="cards">{"".join(cards)}</div>' if cards else '<p class="note">None found.</p>'
    return f"<h2>{html.escape(title)} ({found}{shown})</h2>{body}"


def _card(paths: list[Path], caption: str) -> str:
    images = "".join(_thumbnail(path) for path in paths)
    return f'<figure class="card">{images}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _thumbnail(path: Path) -> str:
    try:
        image = read_image(path)
    except UnreadableImage as exc:
        return f'<span class="note">{html.escape(f"{path.name}: {exc}")}</span>'
    scale = THUMBNAIL / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    # a few pixels enlarged stay sharp squares; a photograph shrinks smoothly
    small = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
    if small.ndim == 3 and small.shape[2] == 3:
        small = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    encoded = base64.b64encode(cv2.imencode(".png", small)[1].tobytes()).decode()
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(path.name)}">'
