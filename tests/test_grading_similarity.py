"""The similarity report: answers normalised (template, comments, docstrings, names), pairs compared and flagged.

The unit tests use hand-written answers to one question (CLIP's loss and training step, with their stubs as the
student notebook has them); the report tests build submissions from a real set's student notebook, whatever its
questions are (read from ``load_set``).
"""

import copy
import csv
import random
import re
import time
from pathlib import Path

import nbformat
import pytest

from mmcourse.__main__ import main
from mmcourse.grading import similarity as sim
from mmcourse.grading.similarity import (
    MIN_TOKENS,
    THRESHOLD,
    answer_source,
    normalise,
    question_templates,
    similarity,
    similarity_report,
    student_notebook_path,
)
from mmcourse.grading.spec import load_set

ROOT = Path(__file__).resolve().parent.parent

CLIP_LOSS_STUB = '''def clip_loss(image_features, text_features, temperature=0.07):
    """Symmetric InfoNCE loss of N matching (image, text) pairs; returns a 0-d tensor."""
    # YOUR CODE HERE
    raise NotImplementedError'''

# Three correct clip_loss answers: ALICE; BOB, a copy of ALICE with other names, comments and a docstring; CAROL and
# DAVE, written independently (log_softmax on the diagonal; F.cross_entropy with other intermediate steps).
ALICE = '''def clip_loss(image_features, text_features, temperature=0.07):
    """Symmetric InfoNCE loss of N matching (image, text) pairs; returns a 0-d tensor."""
    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1)
    logits = image @ text.T / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2'''

BOB = '''def clip_loss(image_features, text_features, temperature=0.07):
    """My CLIP loss."""
    # unit-length rows
    img = F.normalize(image_features, dim=-1)  # images
    txt = F.normalize(text_features, dim=-1)   # texts

    # (N, N) similarities, the diagonal holds the pairs
    sims = img @ txt.T / temperature
    labels = torch.arange(sims.shape[0], device=sims.device)
    # average of both directions
    return (F.cross_entropy(sims, labels) + F.cross_entropy(sims.T, labels)) / 2'''

CAROL = '''def clip_loss(image_features, text_features, temperature=0.07):
    """Symmetric InfoNCE loss of N matching (image, text) pairs; returns a 0-d tensor."""
    img = image_features / image_features.norm(dim=1, keepdim=True)
    txt = text_features / text_features.norm(dim=1, keepdim=True)
    sim = img @ txt.t() / temperature
    idx = torch.arange(sim.size(0))
    loss_i = -sim.log_softmax(dim=1)[idx, idx].mean()
    loss_t = -sim.log_softmax(dim=0)[idx, idx].mean()
    return 0.5 * (loss_i + loss_t)'''

DAVE = """def clip_loss(image_features, text_features, temperature=0.07):
    image_features = F.normalize(image_features, dim=1)
    text_features = F.normalize(text_features, dim=1)
    logits = image_features @ text_features.t() / temperature
    labels = torch.arange(len(logits))
    loss_i2t = F.cross_entropy(logits, labels)
    loss_t2i = F.cross_entropy(logits.t(), labels)
    return (loss_i2t + loss_t2i) / 2"""

TRAIN_SIGNATURE = (
    "def clip_train_step(image_encoder, text_encoder, log_scale, optimizer, images, texts, max_scale=100.0):\n"
)
TRAIN_STEP_STUB = (
    TRAIN_SIGNATURE
    + '''    """One CLIP step with a learnable logit scale exp(t), t clamped to [0, ln max_scale] after the update."""
    # YOUR CODE HERE
    raise NotImplementedError'''
)

TRAIN_STEP_A = (
    TRAIN_SIGNATURE
    + """    image = F.normalize(image_encoder(images), dim=-1)
    text = F.normalize(text_encoder(texts), dim=-1)
    logits = log_scale.exp() * image @ text.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        log_scale.clamp_(0.0, math.log(max_scale))
    return loss.item()"""
)

TRAIN_STEP_B = (
    TRAIN_SIGNATURE
    + """    optimizer.zero_grad()
    img_emb = image_encoder(images)
    txt_emb = text_encoder(texts)
    temperature = 1.0 / log_scale.exp()
    loss = clip_loss(img_emb, txt_emb, temperature)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        log_scale.data = torch.clamp(log_scale.data, min=0.0, max=math.log(max_scale))
    return float(loss.detach())"""
)


def _similarity(a: str, b: str, template: str = CLIP_LOSS_STUB) -> float:
    return similarity(normalise(a, template), normalise(b, template))


# ----------------------------------------------------------------------------------------------------------------
# Normalisation and similarity
# ----------------------------------------------------------------------------------------------------------------
def test_normalising_removes_the_template_comments_docstrings_and_names():
    tokens = normalise(ALICE, CLIP_LOSS_STUB)
    text = " ".join(tokens)
    assert "def" not in tokens and "NotImplementedError" not in tokens  # the signature and the stub are template
    assert "Symmetric" not in text and "#" not in text
    assert not {"image", "text", "logits", "targets", "image_features"} & set(tokens)  # bound names renamed
    assert {"F", "normalize", "torch", "arange", "cross_entropy", "dim", "device", "shape"} <= set(tokens)
    # parameters keep the template's placeholders; the answer's own names follow in order of first appearance
    assert text.startswith("<1> v4 = F . normalize ( v1 , dim = - 1 ) <1> v5 = F . normalize ( v2")
    # the stub's placeholder lines go even when an answer keeps them
    kept = ALICE.replace('    """Symmetric', '    # YOUR CODE HERE\n    raise NotImplementedError\n    """Symmetric')
    assert normalise(kept, CLIP_LOSS_STUB) == tokens


def test_a_copy_with_renamed_variables_and_added_comments_is_flagged():
    value = _similarity(ALICE, BOB)
    assert value >= THRESHOLD, value
    assert value == 1.0  # same code once names, comments and docstrings are gone
    assert len(normalise(BOB, CLIP_LOSS_STUB)) >= MIN_TOKENS
    # one changed step still reads as a copy
    edited = BOB.replace("/ 2", "* 0.5")
    assert THRESHOLD <= _similarity(ALICE, edited) < 1.0


def test_untouched_stubs_are_empty_and_never_similar():
    assert normalise(CLIP_LOSS_STUB, CLIP_LOSS_STUB) == ()
    reformatted = CLIP_LOSS_STUB.replace("    # YOUR CODE HERE\n", "\n    # YOUR CODE HERE (todo)\n\n")
    assert normalise(reformatted, CLIP_LOSS_STUB) == ()
    assert _similarity(CLIP_LOSS_STUB, reformatted) == 0.0


@pytest.mark.parametrize(
    "a, b, template",
    [
        (ALICE, CAROL, CLIP_LOSS_STUB),
        (ALICE, DAVE, CLIP_LOSS_STUB),
        (CAROL, DAVE, CLIP_LOSS_STUB),
        (TRAIN_STEP_A, TRAIN_STEP_B, TRAIN_STEP_STUB),
    ],
    ids=["alice-carol", "alice-dave", "carol-dave", "train-step"],
)
def test_independent_correct_solutions_are_not_flagged(a, b, template):
    value = _similarity(a, b, template)
    assert 0 < value < THRESHOLD, value


def test_code_that_does_not_parse_is_still_compared():
    broken = ALICE.replace("(logits, targets)", "(logits, targets")  # unbalanced parenthesis
    renamed = broken.replace("logits", "scores").replace("targets", "labels")
    assert normalise(broken, CLIP_LOSS_STUB)
    assert _similarity(broken, renamed) >= THRESHOLD
    assert _similarity(broken, CAROL) < THRESHOLD


def test_short_answers_are_not_flagged():
    rows = sim._pairs("ex04", "q", [("a", ("<1>", "return", "v1")), ("b", ("<1>", "return", "v1"))], THRESHOLD)
    assert [(r.similarity, r.flagged) for r in rows] == [(1.0, False)]


# ----------------------------------------------------------------------------------------------------------------
# The report over a folder of submissions
# ----------------------------------------------------------------------------------------------------------------
def _first_function_question(set_id: str) -> str:
    return next(q.name for q in load_set(set_id) if q.kind == "function")


def _student(set_id: str):
    return nbformat.read(str(student_notebook_path(set_id, ROOT / "exercises")), as_version=4)


def _answer(stub: str, body_of: str) -> str:
    """The stub's signature and docstring with the body of ``body_of`` (one of the clip_loss answers above)."""
    body = [line for line in body_of.split("\n")[1:] if not line.strip().startswith('"""')]
    head = [line for line in stub.split("\n") if line.strip() not in ("# YOUR CODE HERE", "raise NotImplementedError")]
    return "\n".join(head + body)


def _submission(set_id: str, answers: dict[str, str]):
    nb = copy.deepcopy(_student(set_id))
    for cell in nb.cells:
        for name, source in answers.items():
            if cell.cell_type == "code" and name in re.findall(r"^(?:def|class)\s+(\w+)", cell.source, re.MULTILINE):
                cell.source = source
    return nb


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """alice, bob (alice's copy), carol (independent) answer one question; dave and erin hand in the stub."""
    base = tmp_path_factory.mktemp("similarity")
    folder = base / "submissions"
    (folder / "group").mkdir(parents=True)
    set_id = "ex04"
    name = _first_function_question(set_id)
    stub = question_templates(set_id, ROOT / "exercises")[name]
    for who, body in {"alice": ALICE, "group/bob": BOB, "carol": CAROL}.items():
        nbformat.write(_submission(set_id, {name: _answer(stub, body)}), str(folder / f"{who}.ipynb"))
    for who in ("dave", "erin"):
        nbformat.write(_student(set_id), str(folder / f"Copy of {who}.ipynb"))
    (folder / "notes.txt").write_text("not a notebook", encoding="utf-8")
    other = next(s for s in ("ex01", "ex02", "ex03") if s != set_id)
    nbformat.write(_student(other), str(folder / "other_set.ipynb"))
    return {"base": base, "folder": folder, "set": set_id, "question": name}


def test_the_report_flags_the_copy_and_skips_the_stubs(class_folder):
    rows = similarity_report(class_folder["folder"], student_dir=ROOT / "exercises")
    pairs = {(r.a, r.b): r for r in rows}
    assert set(pairs) == {
        ("alice.ipynb", "group/bob.ipynb"),
        ("alice.ipynb", "carol.ipynb"),
        ("carol.ipynb", "group/bob.ipynb"),
    }  # 3 answers, 3 pairs; the stubs and the other set's notebook (all stubs) give no pair
    assert {(r.set_id, r.question) for r in rows} == {(class_folder["set"], class_folder["question"])}
    assert [(r.a, r.b) for r in rows if r.flagged] == [("alice.ipynb", "group/bob.ipynb")]
    assert rows[0].similarity == max(r.similarity for r in rows)  # most similar first
    assert pairs["alice.ipynb", "carol.ipynb"].similarity < THRESHOLD


def test_the_similarity_command_writes_the_csv(class_folder, capsys):
    out = class_folder["base"] / "report" / "similarity.csv"
    assert main(["exercises", "similarity", str(class_folder["folder"]), "--out", str(out)]) == 0
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["a", "b", "set", "question", "similarity", "flagged"]
    assert [(r["a"], r["b"], r["flagged"]) for r in rows][0] == ("alice.ipynb", "group/bob.ipynb", "yes")
    assert [r["flagged"] for r in rows].count("yes") == 1
    assert "3 pairs compared, 1 flagged" in capsys.readouterr().out
    # a lower threshold flags more
    assert main(["exercises", "similarity", str(class_folder["folder"]), "--out", str(out), "--threshold", "0.3"]) == 0
    with out.open(encoding="utf-8", newline="") as f:
        assert [r["flagged"] for r in csv.DictReader(f)].count("yes") == 3


def test_grade_with_similarity_writes_the_report_next_to_the_gradebook(class_folder, monkeypatch, capsys):
    from mmcourse.grading import grader

    graded = []

    def fake_grade_directory(submissions, out, **kwargs):  # the similarity needs no kernel: skip the grading
        graded.append(out)
        return grader.GradeSummary([], Path(out), Path(out).with_name("feedback"), 0.0)

    monkeypatch.setattr(grader, "grade_directory", fake_grade_directory)
    out = class_folder["base"] / "grading" / "grades.csv"
    code = main(["grade", str(class_folder["folder"]), "--out", str(out), "--public-only", "--similarity", "--quiet"])
    assert code == 0 and graded == [out]
    report = out.with_name("grades_similarity.csv")
    with report.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[0]["flagged"] == "yes"
    assert f"-> {report}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, problem",
    [
        (["--set", "ex99"], "unknown exercise set 'ex99'"),
        (["--threshold", "1.5"], "threshold must be a number in (0, 1]"),
        (["--threshold", "0"], "threshold must be a number in (0, 1]"),
    ],
)
def test_bad_similarity_arguments_are_refused(class_folder, capsys, extra, problem):
    out = class_folder["base"] / "bad.csv"
    assert main(["exercises", "similarity", str(class_folder["folder"]), "--out", str(out), *extra]) == 2
    assert problem in capsys.readouterr().err
    assert not out.exists()


def test_the_report_goes_outside_the_submissions(class_folder, capsys):
    folder = class_folder["folder"]
    assert main(["exercises", "similarity", str(folder), "--out", str(folder / "similarity.csv")]) == 2
    assert "outside the submissions folder" in capsys.readouterr().err
    assert main(["exercises", "similarity", str(folder / "missing"), "--out", str(folder.parent / "x.csv")]) == 2
    code = main(["grade", str(folder), "--out", str(folder.parent / "g.csv"), "--similarity-threshold", "0.5"])
    assert code == 2 and "needs --similarity" in capsys.readouterr().err


def test_forty_submissions_take_seconds(tmp_path):
    """40 submissions of a set, every question answered (the master's answers, with lines dropped and names
    changed at random): 780 pairs per question."""
    set_id = "ex01"
    exercise_set = load_set(set_id)
    master = nbformat.read(str(next((ROOT / "exercises/instructor/masters").glob(f"{set_id}_*.ipynb"))), as_version=4)
    solutions = {
        q.name: "\n".join(line for line in answer_source(master, q.name).split("\n") if "SOLUTION" not in line)
        for q in exercise_set
    }
    rng = random.Random(0)
    for student in range(40):
        answers = {}
        for name, source in solutions.items():
            lines = source.split("\n")
            for _ in range(rng.randrange(3)):
                del lines[rng.randrange(2, len(lines))]
            answer = "\n".join(lines)
            for word in sorted(set(re.findall(r"^\s+([a-z_]\w*)\s*=[^=]", answer, re.MULTILINE))):  # local names
                if rng.random() < 0.2:
                    answer = re.sub(rf"\b{word}\b", f"{word}_{student}", answer)
            answers[name] = answer
        nbformat.write(_submission(set_id, answers), str(tmp_path / f"s{student:02d}.ipynb"))
    start = time.perf_counter()
    rows = similarity_report(tmp_path, student_dir=ROOT / "exercises")
    seconds = time.perf_counter() - start
    assert len(rows) == 40 * 39 // 2 * len(exercise_set.questions)
    assert seconds < 5, f"{seconds:.1f} s"
