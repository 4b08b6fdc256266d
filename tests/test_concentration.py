"""The concentration profile's arithmetic and the graded verdict's three kinds (localized, concentrated but
redundant, distributed)."""

from __future__ import annotations

import math

import torch

from alignloc.analyses.concentration import at_k, profile_from, smallest_k
from alignloc.analyses.verdict import VerdictConfig, functional_block, sufficient_set


def _profile(suff: list[float], nec: list[float], n: int = 40, noise: float = 0.0) -> dict:
    """A profile whose per-prompt values give the sufficiency / necessity means ``suff`` / ``nec`` (gap 10 nats)."""
    g = torch.Generator().manual_seed(0)
    base = torch.zeros(n)
    tuned = torch.full((n,), 10.0) + noise * torch.randn(n, generator=g)
    up = torch.stack([base + s * tuned for s in suff])
    down = torch.stack([tuned - x * tuned for x in nec])
    sets = [list(range(k)) for k in range(1, len(suff) + 1)]
    return profile_from(base, tuned, up, down, sets, n_boot=200, seed=0)


def test_profile_is_a_ratio_of_means_with_intervals_and_the_smallest_k():
    p = _profile([0.3, 0.85, 0.95, 1.0], [0.1, 0.4, 0.92, 1.0], noise=2.0)
    assert [round(x, 6) for x in p["sufficiency"]["mean"]] == [0.3, 0.85, 0.95, 1.0]
    assert p["k_sufficient"] == {"0.5": 2, "0.8": 2, "0.9": 3} and p["k_necessary"] == {"0.5": 3, "0.8": 3, "0.9": 3}
    assert p["gap"] > 9 and p["n"] == 40 and p["n_boot"] == 200
    # the ratio of means is exact for these rows (every prompt's share is the same), so the interval is a point
    assert all(abs(lo - m) < 1e-5 and abs(hi - m) < 1e-5 for lo, m, hi in
               zip(p["sufficiency"]["lo"], p["sufficiency"]["mean"], p["sufficiency"]["hi"], strict=True))
    # prompts that disagree give an interval around the mean
    g = torch.Generator().manual_seed(1)
    base, tuned = torch.zeros(60), torch.full((60,), 4.0)
    up = (base + tuned * torch.rand(60, generator=g))[None]  # each prompt carries a different share
    q = profile_from(base, tuned, up, tuned[None] * 0.5, [[0]], n_boot=500)
    lo, m, hi = q["sufficiency"]["lo"][0], q["sufficiency"]["mean"][0], q["sufficiency"]["hi"][0]
    assert lo < m < hi and hi - lo > 0.05 and abs(m - 0.5) < 0.15
    assert at_k(p, 2)["layers"] == [0, 1] and at_k(p, 2)["sufficiency_ci"][0] <= 0.85 + 1e-6
    assert smallest_k([0.1, float("nan"), 0.9], 0.8) == 3 and smallest_k([0.1], 0.5) is None


def _loc(suff: list[float], nec: list[float], carrier=None) -> dict:
    return {"gap": 10.0, "n": 40, "carrier": carrier, "profile": {**_profile(suff, nec), "metric": "logprob",
                                                                  "ranking_source": "mask", "saturated": False},
            "windows": {"sizes": [1], "windows": {"1": {"starts": [0, 1, 2, 3, 4, 5, 6, 7],
                                                        "sufficiency": [suff[0]] + [0.0] * 7,
                                                        "necessity": [nec[0]] + [0.0] * 7}}}}


def test_the_verdict_grades_localized_concentrated_and_distributed():
    cfg = VerdictConfig()
    # a small set both ways: localized, named from the profile
    loc = functional_block("behavior", _loc([0.5, 0.9, 1.0, 1, 1, 1, 1, 1], [0.4, 0.85, 1, 1, 1, 1, 1, 1]), [], [], cfg, 8)
    assert loc["grade"] == "localized" and loc["layers"] == [0, 1] and loc["carrier"]["source"] == "profile"
    # one layer brings the whole gap, but reverting it (or any small set) costs little: concentrated, redundant
    red = functional_block("behavior", _loc([0.97, 0.98, 1, 1, 1, 1, 1, 1], [0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 1, 1]),
                           [], [], cfg, 8)
    assert red["grade"] == "concentrated" and red["localized"] is False and red["layers"] == []
    assert red["sufficient"]["layers"] == [0] and math.isclose(red["sufficient"]["necessity"], 0.3, abs_tol=1e-6)
    assert "redundant" in red["reason"] and red["profile"]["k_necessary"]["0.8"] == 5
    # nothing small is even sufficient: distributed
    dis = functional_block("behavior", _loc([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1, 1], [0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1, 1]),
                           [], [], cfg, 8)
    assert dis["grade"] == "distributed" and dis["layers"] == [] and "at most 4 layers" in dis["reason"]
    assert sufficient_set(_loc([0.1] * 8, [0.1] * 8), cfg, 8) is None
    # one window alone looking sufficient while the profile's nested sets are not (noise on a null pair's small gap):
    # the profile, with its intervals, decides
    noisy = _loc([0.02] * 8, [0.5] * 8)
    noisy["windows"]["windows"]["1"]["sufficiency"][3] = 0.99
    assert functional_block("behavior", noisy, [], [], cfg, 8)["grade"] == "distributed"
    del noisy["profile"]
    assert sufficient_set(noisy, cfg, 8)["layers"] == [3]  # without a profile, the windows are what there is


def test_the_minimum_gap_is_per_answer_so_a_per_token_gap_is_counted_over_its_answers():
    cfg = VerdictConfig()
    small = _loc([0.5, 0.9, 1.0, 1, 1, 1, 1, 1], [0.4, 0.85, 1, 1, 1, 1, 1, 1]) | {"gap": 0.34}
    # summed targets: 0.34 nats is under the 0.5-nat minimum, nothing is named
    no = functional_block("behavior", small, [], [], cfg, 8)
    assert no["layers"] == [] and "grade" not in no and "below 0.5 per answer" in no["reason"]
    # the same gap per token over 16-token answers (a format carried by an answer's opening): 5.4 nats per answer
    yes = functional_block("behavior", small | {"answer_tokens": 16.0}, [], [], cfg, 8)
    assert yes["grade"] == "localized" and yes["layers"] == [0, 1] and yes["answer_tokens"] == 16.0
    assert cfg.too_small(0.03, 16.0) and not cfg.too_small(0.04, 16.0) and cfg.too_small(float("nan"), 16.0)
    # without causal evidence the output line's gap is gated the same way
    lens = functional_block("behavior", None, [3], [], cfg, 8, output_gap=0.34, answer_tokens=1.0)
    assert lens["layers"] == [] and "+0.34 nats, under 0.5 per answer" in lens["reason"]
    assert functional_block("behavior", None, [3], [], cfg, 8, output_gap=0.34, answer_tokens=16.0)["layers"] == [3]


def test_a_profile_cut_at_half_the_layers_grades_as_the_whole_one_and_says_where_it_stopped():
    """The standard budget grafts the profile's top-k sets up to half the layers (``VerdictConfig.max_share``): the
    verdict names no larger set, so each grade reads the same off the cut profile, which the block and its sentence
    mark (``max_k``); a level reached only by a larger set reads None there."""
    from alignloc.analyses.verdict_text import _profile_text

    cfg = VerdictConfig()
    for suff, nec, grade in (([0.5, 0.9, 1.0, 1, 1, 1, 1, 1], [0.4, 0.85, 1, 1, 1, 1, 1, 1], "localized"),
                             ([0.97, 0.98, 1, 1, 1, 1, 1, 1], [0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 1, 1], "concentrated"),
                             ([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1, 1], [0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1, 1], "distributed")):
        whole, cut = _loc(suff, nec), _loc(suff[:4], nec[:4])
        a, b = functional_block("behavior", whole, [], [], cfg, 8), functional_block("behavior", cut, [], [], cfg, 8)
        assert a["grade"] == b["grade"] == grade and a["layers"] == b["layers"]
        assert a.get("sufficient") == b.get("sufficient") and a.get("carrier") == b.get("carrier")
        assert "max_k" not in a["profile"] and b["profile"]["max_k"] == 4
    assert b["profile"]["k_sufficient"]["0.8"] is None and a["profile"]["k_sufficient"]["0.8"] == 6
    assert "no top-k set of at most 4 layers brings 80% of the gap into the base or removes 80%" in _profile_text(b)
    assert "no top-k set of at most" not in _profile_text(a) and "the top 6 bring 80%" in _profile_text(a)


def test_the_profile_table_says_where_the_budget_stopped_it():
    """The report's profile table marks a profile cut before the last layer, and only such a profile."""
    from alignloc.report.causal import profile_markdown

    def prof(k: int) -> dict:
        suff = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1, 1][:k]
        return {**_profile(suff, suff), "metric": "logprob", "ranking_source": "mask", "ranking": list(range(8))}

    cut, whole = "\n".join(profile_markdown(prof(4))), "\n".join(profile_markdown(prof(8)))
    assert "Sets of up to 4 of the 8 layers: the verdict names no larger set" in cut and "| 4 | [0, 1, 2, 3] |" in cut
    assert "Sets of up to" not in whole and "| 8 |" in whole
