"""The claims table: known findings name real checks, and the paper profile amends them."""

from claims.table import CHECKS, EXPECTED, EXPECTED_PAPER, expected

SLUGS = ("smollm2", "gemma3", "llama", "qwen", "olmo")
IDS = {c.test_id(None if c.subject == "toy" else m) for c in CHECKS for m in SLUGS}


def test_known_findings_name_real_checks():
    assert set(EXPECTED) <= IDS, sorted(set(EXPECTED) - IDS)
    assert set(EXPECTED_PAPER) <= IDS, sorted(set(EXPECTED_PAPER) - IDS)


def test_the_paper_profile_amends_the_known_findings():
    default, paper = expected("default"), expected("paper")
    assert default == EXPECTED
    for tid, reason in EXPECTED_PAPER.items():
        assert paper.get(tid) == reason  # None: holds at the paper's size, so no xfail
    for tid in set(EXPECTED) - set(EXPECTED_PAPER):
        assert paper[tid] == EXPECTED[tid]  # not run at the paper's size: default finding kept
    assert "C-Fig4-gemma3-last16-nq" in default and "C-Fig4-gemma3-last16-nq" not in paper
    assert "C5d-gemma3-first16-nq" not in default and "C5d-gemma3-first16-nq" in paper
