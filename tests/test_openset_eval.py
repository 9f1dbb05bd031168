"""The open-set evaluation (`faceledger eval open-set`): its counting on hand-made templates with known answers
(fast, no face data), and the issue's acceptance on the real galleries of the shared data (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from faceledger.evaluation import openset as ev
from faceledger.matching.calibration import Threshold
from faceledger.matching.openset import MATCH, OpenSetPolicy

T, R = 0.5, 0.3  # the stub policy's match and review thresholds


def stub_policies(target: float, n: int, margin: float) -> OpenSetPolicy:
    """Fixed thresholds whatever the target and size: the counts below are known by hand."""
    return OpenSetPolicy(target, n, Threshold(T, target / max(n, 1), "measured", target / max(n, 1)),
                         Threshold(R, 0.1, "measured", 0.1), margin)


class Faces:
    """Unit vectors built from named axes: ``add(path, source, person, {axis: weight})``, the rest on a fresh axis."""

    def __init__(self, dim: int = 256) -> None:
        self.dim, self.axes, self.rows = dim, {}, []

    def axis(self, name: str) -> int:
        return self.axes.setdefault(name, len(self.axes))

    def add(self, path, source, person=None, weights=None, gender=None):
        v = np.zeros(self.dim)
        for name, w in (weights or {}).items():
            v[self.axis(name)] = w
        rest = 1 - float(v @ v)
        assert rest >= -1e-12
        v[self.axis(f"fresh {path}")] = np.sqrt(max(rest, 0.0))
        self.rows.append((path, source, person, v, gender))

    def templates(self) -> ev.FaceTemplates:
        paths, source, person, vectors, gender = zip(*self.rows)
        return ev.FaceTemplates(list(paths), np.array(source, object), np.array(person, object),
                                np.stack(vectors).astype(np.float32),
                                {"UTKFace gender": np.array(gender, object)})


def known_faces() -> ev.FaceTemplates:
    """10 people with 2 identical photos, person Q whose 2nd photo looks more like distractor S9 than like Q,
    10 one-photo distractors, 100 strangers (UTKFace, 50 F then 50 M) of which a few resemble somebody."""
    f = Faces()
    for i in range(10):
        for k in range(2):
            f.add(f"P{i}/{k}", ev.LFW, f"P{i}", {f"P{i}": 1.0})
    f.add("Q/0", ev.LFW, "Q", {"Q": 1.0})
    f.add("Q/1", ev.LFW, "Q", {"S9": 0.56, "Q": 0.44})  # S9 0.56 > Q 0.44: a wrong person ahead by 0.12
    for i in range(10):
        f.add(f"S{i}/0", ev.LFW, f"S{i}", {f"S{i}": 1.0})
    special = {0: {"P0": 0.6},  # a match: a stranger above the threshold
               1: {"S0": 0.6},  # a match to a one-face distractor
               50: {"P1": 0.7},  # a match (a man)
               2: {"P2": 0.4},  # review band only
               3: {"P3": 0.55, "P4": 0.55},  # two subjects above the threshold: review, never two matches
               4: {"P5": 0.56, "P6": 0.48}}  # a match only while the margin is under 0.08
    for j in range(100):
        f.add(f"U{j}", ev.UTK, None, special.get(j, {}), gender="F" if j < 50 else "M")
    return f.templates()


def by(result: dict, target: float, margin: float) -> dict:
    (g,) = result["galleries"]
    (row,) = [r for r in g["results"] if r["policy"]["target_fpir"] == target and r["policy"]["margin"] == margin]
    return row


def test_counts_on_hand_made_templates():
    t = known_faces()
    result = ev.evaluate_templates(t, stub_policies, sizes=(None,), targets=(1e-2, 1e-3), margins=(0.0, 0.1, 0.2))
    (g,) = result["galleries"]
    assert (g["name"], g["faces"], g["subjects"], g["enrolled_people"], g["distractors"]) == ("largest", 32, 21, 11, 10)
    # every face is a probe: LFW faces leave their own face out of their search (the distractors become strangers)
    assert g["mated_probes"] == 22 and g["nonmated_probes"] == 110
    assert g["nonmated_by_source"] == {ev.LFW: 10, ev.UTK: 100, ev.PEOPLE: 0}

    m0 = by(result, 1e-2, 0.0)
    # non-mated matches: U0, U1, U50, U4, and S9 (searched without its own face, Q's 2nd photo scores 0.56)
    assert (m0["fpir"]["events"], m0["fpir"]["trials"]) == (5, 110)
    assert m0["fpir"]["rate"] == pytest.approx(5 / 110)
    assert m0["fpir"]["expected_events"] == pytest.approx(1.1) and m0["fpir"]["conclusive"] is False
    assert m0["fpir"]["verdict"].startswith("not conclusive")
    lo, hi = m0["fpir"]["ci95"]
    assert lo < 5 / 110 < hi
    # mated: the 20 photos of P0..P9 match their own subject; Q/0 only reaches the review band (Q/1 at 0.44);
    # Q/1 is matched to S9, the wrong person
    assert (m0["fnir"]["errors"], m0["fnir"]["trials"]) == (2, 22)
    assert (m0["wrong_person"]["errors"], m0["wrong_person"]["trials"]) == (1, 22)
    assert m0["wrong_person"]["at_most_0.1%"] is False
    assert m0["review"]["mated"]["errors"] == 1 and m0["review"]["nonmated"]["errors"] == 2  # Q/0; U2, U3
    assert m0["two_subjects_above_threshold"] == 1  # U3, sent to review
    assert m0["policy"]["basis"] == "measured" and m0["policy"]["threshold"] == T

    m1 = by(result, 1e-3, 0.1)  # U4 (ahead by 0.08) goes to review; Q/1 (ahead by 0.12) still a wrong match
    assert m1["fpir"]["events"] == 4 and m1["review"]["nonmated"]["errors"] == 3
    assert m1["wrong_person"]["errors"] == 1 and m1["fnir"]["errors"] == 2
    m2 = by(result, 1e-3, 0.2)  # Q/1 goes to review too
    assert m2["fpir"]["events"] == 4 and m2["wrong_person"]["errors"] == 0 and m2["fnir"]["errors"] == 2
    assert m2["review"]["mated"]["errors"] == 2

    # the margin advice: the smallest margin without wrong-person matches (1 of 22 is over 0.1%), at no FNIR cost
    advice = result["recommended_margin"]
    assert advice["margin"] == 0.2
    assert advice["fnir_cost"]["largest @ 0.001"]["fnir_cost"] == pytest.approx(0.0)
    assert advice["worst_wrong_person_rate_by_margin"]["0"] == pytest.approx(1 / 22)

    # FPIR per group of the strangers' labels (the group margin is 0 here): F has U0, U1, U4; M has U50
    groups = g["groups"]["by_target"]["0.001"]["UTKFace gender"]["groups"]
    assert (groups["F"]["events"], groups["F"]["trials"]) == (3, 50)
    assert (groups["M"]["events"], groups["M"]["trials"]) == (1, 50)


def test_never_two_matches_is_checked():
    t = known_faces()
    (g,) = ev.split_galleries(t, (None,))
    s = ev.search(t, g)

    class Broken(OpenSetPolicy):
        def decide_many(self, top, second):
            return np.full(len(top), MATCH, dtype=object)

    broken = Broken(1e-3, g.size, Threshold(T, 1e-5, "measured", 1e-5), Threshold(R, 0.1, "measured", 0.1), 0.0)
    with pytest.raises(AssertionError, match="two subjects above the threshold"):
        ev.count(broken, s)
    # an unsupported target never matches
    unsupported = OpenSetPolicy(1e-3, g.size, None, Threshold(R, 0.1, "measured", 0.1), 0.0)
    row = ev.count(unsupported, s)
    assert row["fpir"]["events"] == 0 and row["fnir"]["rate"] == 1.0 and row["policy"]["basis"] == "unsupported"


def test_search_is_exact_and_leaves_the_probe_out():
    rng = np.random.default_rng(3)
    t = known_faces()
    t.vectors = rng.normal(size=t.vectors.shape).astype(np.float32)
    t.vectors /= np.linalg.norm(t.vectors, axis=1, keepdims=True)
    (g,) = ev.split_galleries(t, (None,))
    s = ev.search(t, g, chunk=7)  # chunks that do not divide the count
    sims = t.vectors @ t.vectors[g.faces].T
    for i in range(len(t)):
        scores = {}
        for col, face in enumerate(g.faces):
            if face != i:
                subject = g.subject_of_face[col]
                scores[subject] = max(scores.get(subject, -np.inf), sims[i, col])
        ranked = sorted(scores.values(), reverse=True)
        assert s.top[i] == pytest.approx(ranked[0], abs=1e-6) and s.second[i] == pytest.approx(ranked[1], abs=1e-6)
        assert scores[s.top_subject[i]] == pytest.approx(ranked[0], abs=1e-6)


def test_a_stranger_counts_once_whatever_their_photo_count():
    # person 0 has 4 photos, 2 matched: half an event; person 1 one photo, matched; person 2 two photos, none
    people = np.array([0, 0, 0, 0, 1, 2, 2, 3])
    matched = np.array([1, 1, 0, 0, 1, 0, 0, 1], bool)
    nonmated = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)  # the last face is enrolled (mated)
    assert ev.strangers(matched, nonmated, people) == (1.5, 3)
    figure = ev.fpir_figure(*ev.strangers(matched, nonmated, people), 0.1)
    assert figure["rate"] == pytest.approx(0.5) and figure["trials"] == 3


def test_galleries_drawn_several_times_are_pooled():
    t = known_faces()
    result = ev.evaluate_templates(t, stub_policies, sizes=(12, None), targets=(1e-2,), margins=(0.0,), draws=3)
    small, largest = result["galleries"]
    assert (small["draws"], largest["draws"]) == (3, 1)
    (row,) = small["results"]
    per_draw = row["fpir"]["per_draw"]
    assert len(per_draw) == 3 and row["fpir"]["rate"] == pytest.approx(np.mean(per_draw), abs=1e-6)
    assert row["fpir"]["trials"] == pytest.approx(small["strangers"], abs=2)  # strangers of one draw
    singles = [ev.count(stub_policies(1e-2, g.size, 0.0), ev.search(t, g), people=t.people())
               for seed in range(3) for g in ev.split_galleries(t, (12,), seed)]
    assert [x["fpir"]["rate"] for x in singles] == pytest.approx(per_draw, abs=1e-6)
    assert row["fnir"]["trials"] == sum(x["fnir"]["trials"] for x in singles)
    assert result["seed_spread"][small["name"]]["0.01"]["seeds"] == 3


def test_fpir_figure_conclusive_and_factor_of_two():
    ok = ev.fpir_figure(40, 4000, 1e-2)
    assert ok["conclusive"] and ok["within_factor_2"] and ok["events"] == 40 and ok["expected_events"] == 40
    low = ev.fpir_figure(10, 4000, 1e-2)
    assert low["conclusive"] and not low["within_factor_2"] and low["at_most_target"]
    few = ev.fpir_figure(3, 2000, 1e-3)
    assert not few["conclusive"] and "2 events among 2,000 strangers" in few["verdict"]


def test_galleries_are_deterministic_and_sized():
    rng = np.random.default_rng(0)
    f = Faces(dim=8)
    counts = rng.integers(2, 9, size=300)
    rows = []
    for i, n in enumerate(counts):
        rows += [(f"M{i}/{k}", ev.LFW, f"M{i}") for k in range(n)]
    rows += [(f"S{i}/0", ev.LFW, f"S{i}") for i in range(600)]
    rows += [(f"U{i}", ev.UTK, None) for i in range(50)]
    t = ev.FaceTemplates([r[0] for r in rows], np.array([r[1] for r in rows], object),
                         np.array([r[2] for r in rows], object),
                         rng.normal(size=(len(rows), 8)).astype(np.float32), {})
    total = int(counts.sum()) + 600
    splits = ev.split_galleries(t, (500, 1000, None, 10**6))
    assert [g.size for g in splits] == [500, 1000, total] and [g.name for g in splits] == ["500", "1k", "largest"]
    again = ev.split_galleries(t, (500, 1000, None), seed=0)
    assert all(np.array_equal(a.faces, b.faces) for a, b in zip(splits, again))
    assert not np.array_equal(ev.split_galleries(t, (500,), seed=1)[0].faces, splits[0].faces)
    share = counts.sum() / total
    for g in splits:
        people = g.size - g.distractors
        assert abs(people - share * g.size) < 9  # the people with several photos keep their share
        assert len(set(g.faces.tolist())) == g.size and (t.source[g.faces] == ev.LFW).all()
        # subjects are contiguous and a person's photos all go in
        names = [g.subjects[k] for k in g.subject_of_face]
        assert all(t.person[face] == name for face, name in zip(g.faces, names))
        for name in set(names):
            assert names.count(name) == int((t.person == name).sum())


def test_screen_leaves_out_faces_of_another_person():
    f = Faces()
    for k in range(3):
        f.add(f"A/{k}", ev.LFW, "A", {"A": 1.0})
    f.add("B/0", ev.LFW, "B", {"B": 1.0})
    f.add("B/1", ev.LFW, "B", {"A": 0.95, "B": 0.2})  # filed under B, looks like A, not like B
    f.add("U0", ev.UTK, None, {"A": 0.9})  # a web photo of A
    f.add("U1", ev.UTK, None, {"A": 0.4})  # a stranger
    t = f.templates()
    keep, left = ev.screen(t, 0.6)
    assert [x["face"] for x in left] == ["B/1", "U0"] and all(x["possibly"] == "A" for x in left)
    assert keep.tolist() == [True, True, True, True, False, False, True]
    assert len(t.subset(keep)) == 5


# ---------------------------------------------------------------------------------------------------- real data


def _table(result: dict) -> str:
    lines = []
    for g in result["galleries"]:
        for r in g["results"]:
            f, p = r["fpir"], r["policy"]
            lines.append(f"{g['name']:>8} {g['faces']:>6} target {p['target_fpir']:g} margin {p['margin']:g}: FPIR "
                         f"{f['rate']:.4f} ({f['events']}/{f['trials']}, {'conclusive' if f['conclusive'] else 'nc'})"
                         f" FNIR {r['fnir']['rate']:.4f} wrong {r['wrong_person']['errors']}/"
                         f"{r['wrong_person']['trials']} {p['basis']} {p['threshold']}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fast_result(data_dir, settings):
    """The real evaluation of the fast profile on the shared data (embeds about 15,300 faces unless cached)."""
    result = ev.evaluate_open_set(settings, "fast", data_dir, unscreened=False)
    print(_table(result))
    return result


def _default_rows(result: dict) -> list[tuple[dict, dict]]:
    """(gallery, row) at the default policy: target 1e-3 and the recommended margin (the configured 0 if none)."""
    margin = result["recommended_margin"]["margin"]
    margin = 0.0 if margin is None else margin
    return [(g, r) for g in result["galleries"] for r in g["results"]
            if r["policy"]["target_fpir"] == 1e-3 and r["policy"]["margin"] == margin]


@pytest.mark.slow
def test_real_galleries_and_conclusiveness(fast_result):
    galleries = fast_result["galleries"]
    assert [g["name"] for g in galleries] == ["1k", "5k", "10k", "largest"] and galleries[-1]["faces"] > 12_000
    assert [g["faces"] for g in galleries[:3]] == [1000, 5000, 10000]
    for g in galleries:
        for r in g["results"]:
            f = r["fpir"]
            assert f["conclusive"] == (r["policy"]["target_fpir"] * f["trials"] >= 30)
            assert f["conclusive"] or f["verdict"].startswith("not conclusive")
            assert r["two_matches_for_one_probe"] == 0  # decide() asserts it for every probe
    assert any(r["fpir"]["conclusive"] for g in galleries for r in g["results"])


@pytest.mark.slow
def test_measured_fpir_never_above_twice_the_target_where_conclusive(fast_result):
    """The safe side of the acceptance: where the evidence is conclusive, no gallery size lets strangers be matched
    more than twice as often as the policy says."""
    over = [(g["name"], r["policy"]["target_fpir"], r["fpir"]["events"], r["fpir"]["trials"])
            for g in fast_result["galleries"] for r in g["results"]
            if r["fpir"]["conclusive"] and r["fpir"]["rate"] > 2 * r["policy"]["target_fpir"]]
    assert not over, over


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "known, issue 10 left open: target 1e-2 measures 0.83% / 0.49% / 0.45% / 0.61% (fast) at 1k / 5k / 10k / 13k "
    "faces: 5k and 10k are conservative by 2.0-2.2x. Measured cause: the calibration mixes LFW x LFW pairs of people "
    "(57%, tail rate 1.1e-6 at the FMR 2e-6 threshold) with LFW x UTKFace pairs (39%, 3.2e-6) while the galleries "
    "hold LFW faces only; not best-of-several photos (r(m) ~ m in the tail). Strict: this fails loudly once fixed."))
def test_measured_fpir_within_a_factor_of_2_of_the_target_where_conclusive(fast_result):
    off = [(g["name"], r["policy"]["target_fpir"], r["policy"]["margin"], r["fpir"]["events"], r["fpir"]["trials"],
            round(r["fpir"]["rate"], 5)) for g in fast_result["galleries"] for r in g["results"]
           if r["fpir"]["conclusive"] and not r["fpir"]["within_factor_2"]]
    assert not off, f"(gallery, target, margin, events, probes, FPIR) outside [target/2, 2 target]: {off}"


@pytest.mark.slow
def test_default_policy_fpir_at_most_1_percent(fast_result):
    for g, r in _default_rows(fast_result):
        assert r["fpir"]["rate"] <= 0.01, (g["name"], r["fpir"])


@pytest.mark.slow
def test_default_policy_wrong_person_matches_at_most_0_1_percent(fast_result):
    rows = _default_rows(fast_result)
    assert len(rows) == len(fast_result["galleries"])
    for g, r in rows:
        assert r["wrong_person"]["errors"] <= 1e-3 * r["wrong_person"]["trials"], (g["name"], r["wrong_person"])


@pytest.mark.slow
def test_a_margin_is_recommended(fast_result):
    """The margin rule (wrong-person matches at most 0.1% of mated probes at the default policy, every size) finds a
    margin."""
    advice = fast_result["recommended_margin"]
    assert advice["margin"] is not None, advice["worst_wrong_person_rate_by_margin"]

def test_eval_open_set_without_data_says_what_is_missing_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    empty = tmp_path / "no-data"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-m", "faceledger.cli", "eval", "open-set", "--data-dir", str(empty)],
                         capture_output=True, text=True, env={**os.environ, "FACELEDGER_HOME": str(tmp_path / "home")},
                         timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert str(empty / "lfw") in lines[0]


def test_report_section_renders_and_matches_the_schema():
    """The fairness report's section "FPIR per group at the default open-set policy", on the synthetic report."""
    import html

    import jsonschema
    from test_report import assert_summary_matches, schema, synthetic_report

    from faceledger.evaluation import report as rep

    result = ev.evaluate_templates(known_faces(), stub_policies, sizes=(None,), targets=(1e-3, 1e-2), margins=(0.0,))
    section = ev.section_from_result({"protocol": ev.PROTOCOL, **result}, 0.0, 1e-3)
    assert section["overall"]["0.001"]["fpir"]["events"] == 5 and section["gallery"]["faces"] == 32
    report = synthetic_report()
    report["open_set"] = section
    report["summary"] = rep.plain_summary(report)
    jsonschema.validate(report, schema())
    assert_summary_matches(report)
    (sentence,) = [x for x in report["summary"]["sentences"] if x["topic"] == "open-set policy"]
    assert "returned a match for 5.0 of them (4.5%" in sentence["text"] and "fewer than the 30 needed" in sentence["text"]
    page = rep.render_html(report, {})
    assert "<h2>FPIR per group at the default open-set policy</h2>" in page
    assert "<h3>UTKFace gender</h3>" in page and html.escape(sentence["text"]) in page
    assert "3.0 / 50" in page and "1.0 / 50" in page  # F and M events / people
    assert page.index("Open-set identification (LFW)") < page.index("FPIR per group") < page.index("Demographic")


def test_match_errors_are_listed_for_audit():
    result = ev.evaluate_templates(known_faces(), stub_policies, sizes=(None,), targets=(1e-3,), margins=(0.0, 0.2))
    (g,) = result["galleries"]
    errors = g["match_errors"]["by_target"]["0.001"]
    assert g["match_errors"]["margin"] == 0.0
    assert {(x["kind"], x["probe"], x["matched"]) for x in errors} == {
        ("non-mated", "U50", "P1"), ("non-mated", "U0", "P0"), ("non-mated", "U1", "S0"),
        ("non-mated", "U4", "P5"), ("non-mated", "S9/0", "Q"), ("wrong-person", "Q/1", "S9")}
    assert [x["similarity"] for x in errors] == sorted((x["similarity"] for x in errors), reverse=True)
    (wrong,) = [x for x in errors if x["kind"] == "wrong-person"]
    assert wrong["own_subject"] == "Q" and wrong["similarity"] == pytest.approx(0.56) and wrong["second"] == \
        pytest.approx(0.44)
