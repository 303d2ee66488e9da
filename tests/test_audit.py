"""automl-img audit: planted copies, leaks, conflicts and odd images in small real folders."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import run

import automl_img
from automl_img.data import list_image_folder
from automl_img.data.audit import NEAR_DUPLICATE_BITS, audit, near_pairs, perceptual_hash


def texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A smooth random grayscale texture: no two alike."""
    noise = rng.normal(0, 1, (size // 8, size // 8)).astype(np.float32)
    smooth = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(128 + 40 * smooth, 0, 255).astype(np.uint8)


@pytest.fixture
def planted(tmp_path) -> Path:
    """train/test folders of two classes, 20 distinct textures each, then: a re-encoded copy of a training image
    in test (a leak), a brightened copy under the other class (a conflict), a resized copy in the same class (a
    duplicate), an enlarged and a cropped copy in test (leaks), a uniform image, a wide one and a broken file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "planted"
    images = {}
    for part, count in (("train", 14), ("test", 6)):
        for name in ("a", "b"):
            (root / part / name).mkdir(parents=True)
            for n in range(count):
                images[f"{part}/{name}/{n}.png"] = image = texture(rng)
                cv2.imwrite(str(root / part / name / f"{n}.png"), image)
    source = images["train/a/0.png"]
    cv2.imwrite(str(root / "test/a/leak.jpg"), source, [cv2.IMWRITE_JPEG_QUALITY, 80])
    brighter = np.clip(images["train/a/1.png"].astype(np.float32) * 1.1, 0, 255).astype(np.uint8)
    cv2.imwrite(str(root / "train/b/conflict.png"), brighter)
    cv2.imwrite(str(root / "train/a/resized.png"), cv2.resize(images["train/a/2.png"], (58, 58), cv2.INTER_AREA))
    cv2.imwrite(str(root / "test/b/larger.png"), cv2.resize(images["train/b/3.png"], (70, 70)))
    cv2.imwrite(str(root / "test/b/cropped.png"), images["train/b/4.png"][3:61, 1:62])  # up to 5 % off each side
    cv2.imwrite(str(root / "train/b/blank.png"), np.full((64, 64), 200, np.uint8))
    cv2.imwrite(str(root / "train/b/wide.png"), cv2.resize(texture(rng), (200, 40)))
    (root / "train/a/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_planted_copies_are_found_and_named_by_kind(planted):
    report = audit(list_image_folder(planted))
    found = {(pair.kind, frozenset((pair.first, pair.second))) for pair in report.pairs}
    assert found == {
        ("leak", frozenset(("train/a/0.png", "test/a/leak.jpg"))),
        ("leak", frozenset(("train/b/3.png", "test/b/larger.png"))),
        ("leak", frozenset(("train/b/4.png", "test/b/cropped.png"))),
        ("conflict", frozenset(("train/a/1.png", "train/b/conflict.png"))),
        ("duplicate", frozenset(("train/a/2.png", "train/a/resized.png"))),
    }, report.pairs
    assert [pair.kind for pair in report.pairs] == ["leak"] * 3 + ["conflict", "duplicate"]  # most serious first
    # The crop is found only once aligned onto its source: the hash alone misses it.
    assert [pair.second for pair in report.pairs if pair.aligned] == ["test/b/cropped.png"]
    by_hash = audit(list_image_folder(planted), aligned_bits=None).pairs
    assert len(by_hash) == 4 and "test/b/cropped.png" not in {pair.second for pair in by_hash}
    # A leak leaves out its copy outside train, a conflict both images (which label is right?), a duplicate one.
    assert set(report.exclusions()) == {
        "test/a/leak.jpg",
        "test/b/larger.png",
        "test/b/cropped.png",
        "train/a/1.png",
        "train/b/conflict.png",
        "train/a/resized.png",
    } or set(report.exclusions()) == {
        "test/a/leak.jpg",
        "test/b/larger.png",
        "test/b/cropped.png",
        "train/a/1.png",
        "train/b/conflict.png",
        "train/a/2.png",
    }
    odd = {oddity.path: oddity.reason for oddity in report.oddities}
    assert "nearly uniform" in odd["train/b/blank.png"] and "unlike the others" in odd["train/b/wide.png"]
    assert [path for path, _ in report.unreadable] == ["train/a/broken.png"]
    assert report.part_counts == {"train": 33, "test": 15} and report.class_counts == {"a": 23, "b": 25}


def test_cropped_copies_within_one_part_are_found_once_aligned(tmp_path):
    """A folder of class folders (no parts: the search would split it): a copy cropped by up to 5 % a side in its
    own class is a duplicate, in the other class a label conflict; the hash alone misses both."""
    rng = np.random.default_rng(2)
    images = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for n in range(25):
            images[f"{name}/{n}.png"] = image = texture(rng)
            cv2.imwrite(str(tmp_path / name / f"{n}.png"), image)
    cv2.imwrite(str(tmp_path / "a/cropped.png"), images["a/5.png"][2:62, 3:61])
    cv2.imwrite(str(tmp_path / "b/cropped.png"), images["a/6.png"][0:61, 2:64])
    report = audit(list_image_folder(tmp_path))
    found = {(pair.kind, frozenset((pair.first, pair.second)), pair.aligned) for pair in report.pairs}
    assert found == {
        ("duplicate", frozenset(("a/5.png", "a/cropped.png")), True),
        ("conflict", frozenset(("a/6.png", "b/cropped.png")), True),
    }, report.pairs
    assert audit(list_image_folder(tmp_path), aligned_bits=None).pairs == []


def test_distinct_images_are_not_copies_and_the_hash_survives_small_changes():
    rng = np.random.default_rng(1)
    images = [texture(rng)[:, :, None] for _ in range(300)]
    hashes = np.array([perceptual_hash(image) for image in images], dtype=np.uint64)
    assert near_pairs(hashes, NEAR_DUPLICATE_BITS) == []  # 44,850 pairs of different textures
    original = images[0]
    changed = [
        np.clip(original.astype(np.float32) * 0.9, 0, 255).astype(np.uint8),
        cv2.resize(original, (70, 70))[:, :, None],
        cv2.imdecode(cv2.imencode(".jpg", original, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], 0)[:, :, None],
    ]  # a crop, even of one row, moves more bits: such copies are found only once aligned
    for image in changed:
        distance = int(np.bitwise_count(np.array(perceptual_hash(image), dtype=np.uint64) ^ hashes[0]).sum())
        assert distance <= NEAR_DUPLICATE_BITS, distance


def test_the_command_writes_json_and_exclusions_that_search_leaves_out(workdir, planted):
    result = run("audit", planted, "--no-labels")
    folder = workdir / "studies" / "planted" / "audit"
    found = json.loads((folder / "audit.json").read_text())
    assert found["counts"] == {"leak": 3, "conflict": 1, "duplicate": 1, "oddities": 2, "label_suspects": 0}
    assert "3 pair(s) of copies across train/val/test" in result.output and "train/a/broken.png" in result.output
    exclusions = (folder / "exclusions.txt").read_text().splitlines()
    assert exclusions[0].startswith("# automl-img audit of") and any(
        line.startswith("test/a/leak.jpg  # leak of train/a/0.png") for line in exclusions
    )
    assert "--exclude studies/planted/audit/exclusions.txt" in " ".join(result.output.split())
    page = (folder / "audit.html").read_text()
    assert "audit.html" in result.output and "Copies across train/val/test" in page
    thumbnails = re.findall(r'src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page)
    assert sorted(alt for _, alt in thumbnails) == sorted(
        ["0.png", "leak.jpg", "3.png", "larger.png", "4.png", "cropped.png", "1.png", "conflict.png", "2.png"]
        + ["resized.png"]
        + ["blank.png", "wide.png"]
    )  # each pair side by side, each odd image; the broken file is named in the unreadable table
    wide = cv2.imdecode(np.frombuffer(base64.b64decode(dict((a, t) for t, a in thumbnails)["wide.png"]), np.uint8), 0)
    assert wide.shape == (22, 112) and "train/a/broken.png" in page
    listed = automl_img.audit(planted, out=workdir / "again", labels=False).report
    assert len(listed.pairs) == 5 and (workdir / "again" / "exclusions.txt").exists()
    assert "test/b/cropped.png  # leak of train/b/4.png (" in "\n".join(exclusions) and " once aligned)" in "\n".join(
        exclusions
    )


def test_byte_identical_copies_across_parts_and_classes_are_counted(planted):

    from automl_img.data.audit import exact_copies

    shutil.copy(planted / "train/a/5.png", planted / "test/a/copy.png")  # a leak
    shutil.copy(planted / "train/a/6.png", planted / "train/b/copy.png")  # a conflict
    shutil.copy(planted / "train/b/7.png", planted / "train/b/again.png")  # neither
    image_set = list_image_folder(planted)
    assert image_set.parts is not None
    copies = exact_copies(image_set, np.array(image_set.parts))
    assert (copies.across_parts, copies.across_classes) == (2, 2)


def test_a_bad_folder_gets_the_search_s_message(workdir, tmp_path, planted):
    audited = run("audit", tmp_path / "nope", "--no-labels", expect=1)
    searched = run("search", tmp_path / "nope", expect=1)
    assert audited.output == searched.output and "Traceback" not in audited.output
    one_class = tmp_path / "one-class"
    shutil.copytree(planted / "train" / "a", one_class / "a")
    (one_class / "b").mkdir()  # an empty class folder: left out, which leaves one class
    audited = run("audit", one_class, "--no-labels", expect=1)
    assert audited.output == run("search", one_class, expect=1).output and "single class (a)" in audited.output
    (planted / "train" / "c").mkdir()  # left out, and named as the search's skip report names it
    assert "train/c/ (empty class folder, left out)" in " ".join(run("audit", planted, "--no-labels").output.split())


@pytest.mark.slow
def test_search_leaves_out_the_excluded_files_and_keeps_them_out_on_resume(workdir, planted):
    run("audit", planted, "--no-labels")
    exclusions = workdir / "studies" / "planted" / "audit" / "exclusions.txt"
    (planted / "test/a/copy.png").write_bytes((planted / "train/a/5.png").read_bytes())  # after the audit
    searched = run("search", planted, "--exclude", exclusions, "--trials", 1, "--epochs", 1, "-p", "image_size=16")
    assert "2 file(s) have an identical copy in another part of the split" in " ".join(searched.output.split())
    split = json.loads((workdir / "studies" / "planted" / "split.json").read_text())
    listed = str(split)
    assert "leak.jpg" not in listed and "conflict.png" not in listed and "larger.png" not in listed
    resumed = run("search", planted, "--trials", 2, "--epochs", 1, "-p", "image_size=16")
    assert "added after this study fixed its split" not in resumed.output
    other = exclusions.with_name("other.txt")
    other.write_text("train/a/3.png\n")
    refused = run("search", planted, "--exclude", other, "--trials", 3, expect=1)
    assert "fixed its files when it was created" in refused.output


def test_confident_learning_flags_the_image_whose_label_another_class_claims():
    from automl_img.models.label_errors import suspects

    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array(
        [[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7], [0.6, 0.4]]  # rows 2 and 5 look mislabelled
    )
    # Thresholds: class 0, mean of 0.9, 0.8, 0.2 = 0.633; class 1, mean of 0.9, 0.7, 0.4 = 0.667.
    found = suspects(probabilities, labels)
    assert [(s.row, s.given, s.likely) for s in found] == [(2, 0, 1)]  # row 5's 0.6 is under class 0's 0.633
    assert found[0].given_probability == pytest.approx(0.2)


@pytest.mark.slow
def test_flipped_labels_rank_first_and_strays_are_far_from_every_class(workdir, some_digits, tmp_path):
    """40 of 800 labels (5 %, as in issue 30's target) moved to another class: most of them rank first. Three
    images that are no digit (a photograph, noise, a scanned page) are flagged far from every class, few digits."""
    from skimage import data as photographs

    data = Path(shutil.copytree(some_digits, tmp_path / "digits"))
    rng = np.random.default_rng(0)
    files = sorted(data.rglob("*.png"))
    flipped = set()
    for index in rng.choice(len(files), size=40, replace=False):
        source = files[int(index)]
        other = str((int(source.parent.name) + int(rng.integers(1, 10))) % 10)
        source.rename(data / other / source.name)
        flipped.add(f"{other}/{source.name}")
    size = cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE).shape[0]
    strays = {
        "3/photo.png": photographs.camera()[100:300, 150:350],
        "5/noise.png": rng.integers(0, 256, (64, 64), dtype=np.uint8),
        "8/page.png": photographs.page()[:, :190],
    }
    for path, image in strays.items():
        cv2.imwrite(str(data / path), cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    result = automl_img.audit(data, out=tmp_path / "audit")
    report = result.report
    assert report.label_check.startswith("out-of-fold"), report.label_check
    top = [suspect.path for suspect in report.label_suspects[: len(flipped)]]
    precision = len(set(top) & flipped) / len(flipped)
    assert precision >= 0.6, (precision, top[:10])
    exclusions = (tmp_path / "audit" / "exclusions.txt").read_text()
    assert f"# {top[0]}  # labelled" in exclusions
    far = [oddity.path for oddity in report.oddities if oddity.reason.startswith("far from every class")]
    assert set(strays) <= set(far) and len(far) <= len(strays) + 8, far  # 8: 1 % of the digits


@pytest.mark.slow  # builds Lite0
def test_a_second_audit_decodes_only_new_or_changed_files_and_finds_the_same(planted, tmp_path, monkeypatch):
    from automl_img.data import aligned as aligned_module
    from automl_img.data import audit as audit_module
    from automl_img.models import label_errors

    decoded: list[str] = []
    aligned: list[str] = []  # images decoded again to be aligned
    extracted: list[int] = []
    facts, gray, extractor = audit_module._facts, aligned_module._gray, label_errors.lite0_extractor

    def counting_facts(path: Path):
        decoded.append(path.name)
        return facts(path)

    def counting_gray(path: Path):
        aligned.append(path.name)
        return gray(path)

    def counting_extractor(shape):
        extract = extractor(shape)
        return lambda images: extracted.append(len(images)) or extract(images)

    monkeypatch.setattr(audit_module, "_facts", counting_facts)
    monkeypatch.setattr(aligned_module, "_gray", counting_gray)
    monkeypatch.setattr(label_errors, "lite0_extractor", counting_extractor)
    first = automl_img.audit(planted, out=tmp_path / "audit").report
    assert len(decoded) == 48 and extracted == [47]  # the broken file decodes to nothing
    assert first.label_check.startswith("out-of-fold") and (tmp_path / "audit" / "audit-cache.npz").exists()
    assert "cropped.png" in aligned
    decoded.clear(), extracted.clear(), aligned.clear()
    second = automl_img.audit(planted, out=tmp_path / "audit").report
    assert decoded == ["broken.png"] and extracted == []  # an unreadable file is tried again: it may be fixed
    assert aligned == []  # nor are the leaks found by alignment looked for again
    assert (second.pairs, second.oddities, second.label_suspects) == (first.pairs, first.oddities, first.label_suspects)
    cv2.imwrite(str(planted / "train/a/5.png"), cv2.imread(str(planted / "train/a/0.png")))  # now a copy of 0.png
    decoded.clear()
    third = automl_img.audit(planted, out=tmp_path / "audit").report
    assert sorted(decoded) == ["5.png", "broken.png"] and extracted == [1]
    assert ("duplicate", frozenset(("train/a/0.png", "train/a/5.png"))) in {
        (pair.kind, frozenset((pair.first, pair.second))) for pair in third.pairs
    }
    (tmp_path / "audit" / "audit-cache.npz").write_bytes(b"not a cache")  # cut short: ignored, written again
    decoded.clear()
    assert automl_img.audit(planted, out=tmp_path / "audit", labels=False).report.pairs == third.pairs
    assert len(decoded) == 48


def test_the_terminal_prints_names_and_messages_with_brackets_as_they_are(tmp_path):
    from rich.console import Console

    from automl_img.data.audit import AuditReport, Oddity
    from automl_img.display.console import audit_lines
    from automl_img.outputs.audit_report import AuditResult

    report = AuditReport(root=str(tmp_path), images=4, class_counts={"a[1]": 2, "b": 2}, part_counts=None)
    report.oddities = [Oddity("a[1]/x[red].png", "nearly uniform")]
    report.label_check = "not run: pip install 'automl-img[pretrained]', then audit again"
    screen = Console(record=True, width=400)
    for line in audit_lines(AuditResult(tmp_path / "audit[2]", report, str(tmp_path))):
        screen.print(line)
    shown = screen.export_text()
    assert "classes: a[1] 2, b 2" in shown and "a[1]/x[red].png: nearly uniform" in shown
    assert "'automl-img[pretrained]'" in shown and "audit[2]/audit.html" in shown


@pytest.mark.slow  # builds Lite0 for the audit and for a trial
def test_a_head_only_search_takes_the_audits_features(workdir, planted):
    """The audit's Lite0 features at 64 px are what a frozen Lite0 trial at 64 px computes (bfloat16 here): the
    search stores the audit's float16 vectors instead of computing its own."""
    from automl_img.data.audit_cache import features_by_row

    automl_img.audit(planted)  # kept where a search of the folder looks: studies/planted/audit
    known = features_by_row(workdir / "studies" / "planted" / "audit" / "audit-cache.npz", list_image_folder(planted))
    assert len(known) == 47  # every readable file
    search = ("search", planted, "--architecture", "efficientnet-lite0", "--trials", 1, "--epochs", 1)
    run(*search, "-p", "fine_tune_share=0,image_size=64")
    [stored] = [np.load(file) for file in workdir.rglob("*-features-*.npy")]
    assert all(np.array_equal(stored[row], vector.astype(np.float32)) for row, vector in known.items())


def test_features_from_elsewhere_are_taken_only_where_the_extractor_agrees():
    from automl_img.data.features import reusable
    from automl_img.tf_runtime import keras

    extractor = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D()])
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    own = {row: images[row].mean(axis=(0, 1)).astype(np.float16) for row in range(20)}
    assert reusable(extractor, images, own) is own
    assert reusable(extractor, images, {}) == {}
    others = {row: own[(row + 1) % 20] for row in own}  # another file's vector
    assert reusable(extractor, images, others) == {}
    scaled = {row: vector * 1.4 for row, vector in own.items()}  # as far as another size's features
    assert reusable(extractor, images, scaled) == {}
    assert reusable(extractor, images, {row: own[row][:2] for row in own}) == {}  # another backbone's shape
