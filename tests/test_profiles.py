"""Protocol profiles: ours and the reference's layout, rendered exactly and read back."""

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth.runtime.profile import IMAGE_SLOT, ProfileError, load_profile, to_parts
from synth.runtime.protocol import render_code_observation, render_image_results, render_search_results

REFERENCE, OURS = load_profile("deepeyesv2-reference"), load_profile("deepeyes-v2")
S = IMAGE_SLOT


def test_the_reference_layout_as_its_environment_renders_it():
    # prompt.py's RETURN_CODE_PROMPT with "Images:\n" + one marker per image, then .strip()
    assert REFERENCE.render_code("42\n", "", 0) == "Code execution result:\nstdout:\n```\n42\n\n```\n\nstderr:\n```\n\n```"
    assert REFERENCE.render_code("", "oops", 2) == f"Code execution result:\nstdout:\n```\n\n```\n\nstderr:\n```\noops\n```\n\nImages:\n{S}{S}"
    results = [{"title": "T1", "url": "http://a", "snippet": "s1"}, {"title": "T2", "url": "http://b", "snippet": "s2"}]
    assert REFERENCE.render_search([("q", results)]) == (
        "<tool_response>\nA Google search for 'q' found 2 results:\n\n## Web Results\n"
        "1. [T1](http://a)\n\ns1\n\n2. [T2](http://b)\n\ns2\n</tool_response>")
    text, shown = REFERENCE.render_image_search([{"title": "A", "url": "u", "thumbnail": "x"}, {"title": "B", "url": "v", "thumbnail": "y"}])
    assert shown == [0, 1] and text == (
        "<tool_response>\nA Google image search for the image found 2 results:\n\n## Web Results\n"
        f"1. {S}\n[A] \n\n\n2. {S}\n[B] \n\n</tool_response>")
    assert REFERENCE.prefix_for(0) == "" and REFERENCE.prefix_for(1) == "<think>" and REFERENCE.prefix_for(0, "every_turn") == "<think>"
    assert OURS.prefix_for(3) == "" and OURS.prefix_for(3, "after_observation") == "<think>"


def test_ours_is_what_the_protocol_module_renders():
    assert OURS.render_code("out", "", 2).replace(S, "") == render_code_observation("out", "", 2)
    results = [{"title": "T", "url": "http://x", "snippet": "s"}]
    assert OURS.render_search([("q", results)]) == render_search_results([("q", results)]) == "<tool_response>\n1. [T](http://x)\ns\n</tool_response>"
    parts, thumbnails = render_image_results([{"title": "A", "url": "u", "thumbnail": "eA=="}])
    assert parts == [{"type": "text", "text": "<tool_response>\nImage search results:\n1. [A](u)\n"}, {"type": "image"},
                     {"type": "text", "text": "\n</tool_response>"}] and thumbnails == [b"x"]


def test_the_user_turn_puts_the_images_where_the_profile_says():
    assert REFERENCE.user_parts("What?", 2)[:3] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": REFERENCE.user_parts("What?", 2)[2]["text"]}]
    assert REFERENCE.user_parts("What?", 1)[1]["text"].startswith("\nWhat?\n\n")
    assert OURS.user_parts("What?", 1)[1]["text"].startswith("What?\n\nThink first")
    odd = "Is {images} or {question} a field?"  # a question's own braces stay text
    assert REFERENCE.user_text(odd, n_images=1).startswith(f"{S}\n{odd}\n\n") and OURS.user_text(odd, n_images=0).startswith(odd)
    assert "<code>" in REFERENCE.system and "image_search" in REFERENCE.system and "<code>" not in REFERENCE.system_no_tools
    assert "Answer the following question: Why?" in REFERENCE.user_text("Why?", tools=False)


TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="`[]()\ue000"), max_size=40)
LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="`[]()\ue000\n"), max_size=30)
URL = st.from_regex(r"https?://[a-z]{1,8}\.org/[a-z0-9]{0,6}", fullmatch=True)
HIT = st.fixed_dictionaries({"title": LINE, "url": URL, "snippet": LINE.filter(lambda t: not t[:1].isdigit())})


@pytest.mark.parametrize("profile", [OURS, REFERENCE], ids=["ours", "reference"])
@settings(max_examples=60, deadline=None)
@given(stdout=TEXT, stderr=TEXT, images=st.integers(0, 3))
def test_code_observations_read_back(profile, stdout, stderr, images):
    parsed = profile.parse_observation(profile.render_code(stdout, stderr, images))
    assert parsed is not None and parsed.kind == "code" and parsed.images == images
    if profile is OURS or (stdout.strip() == stdout and stderr.strip() == stderr):  # the reference strips the whole text
        assert (parsed.stdout, parsed.stderr) == (stdout, stderr)


@pytest.mark.parametrize("profile", [OURS, REFERENCE], ids=["ours", "reference"])
@settings(max_examples=60, deadline=None)
@given(queries=st.lists(st.tuples(LINE.filter(lambda q: "'" not in q and '"' not in q), st.lists(HIT, max_size=3)), min_size=1, max_size=3))
def test_search_observations_read_back_and_move_between_profiles(profile, queries):
    parsed = profile.parse_observation(profile.render_search(queries))
    assert parsed is not None and parsed.kind == "search"
    got = [[(h.title.strip(), h.url, h.snippet.strip()) for h in hits] for _, hits in parsed.queries]
    assert got == [[(r["title"].strip(), r["url"], r["snippet"].strip()) for r in hits] for _, hits in queries]
    if len(queries) > 1 or profile is REFERENCE:  # ours names the query only when there are several
        assert [q for q, _ in parsed.queries] == [q for q, _ in queries]
    other = REFERENCE if profile is OURS else OURS
    moved = other.parse_observation(other.render_parsed(parsed)).queries
    assert [hits for _, hits in moved] == [hits for _, hits in parsed.queries]
    if len(queries) > 1:  # one query: ours does not print it
        assert moved == parsed.queries


@pytest.mark.parametrize("profile", [OURS, REFERENCE], ids=["ours", "reference"])
def test_image_search_reads_back_with_its_thumbnails(profile):
    results = [{"title": "A", "url": "http://a.org/x", "thumbnail": "x"}, {"title": "B", "url": "http://b.org/y"}, {"title": "C", "url": "", "thumbnail": "y"}]
    text, shown = profile.render_image_search(results)
    parsed = profile.parse_observation(text)
    assert shown == [0, 2] and parsed.kind == "image_search" and [h.title for h in parsed.hits] == ["A", "B", "C"]
    assert [h.image for h in parsed.hits] == [True, False, True] and parsed.images == 2 == text.count(S)
    assert to_parts(profile.render_parsed(parsed)).count({"type": "image"}) == 2
    assert profile.parse_observation("Error: tools are disabled in this run.").kind == "error"
    assert profile.parse_observation("some free text") is None


def test_profiles_by_name_version_and_file(tmp_path):
    assert load_profile("deepeyesv2-reference/1") is REFERENCE
    with pytest.raises(ProfileError, match="unknown protocol profile 'nope': not a file, and not one of deepeyes-v2, deepeyes-v2-compact, deepeyesv2-reference"):
        load_profile("nope")
    shutil.copytree(REFERENCE.path.parent, tmp_path / "profiles")
    mine = tmp_path / "profiles" / "deepeyesv2-reference.yaml"
    (tmp_path / "profiles" / "reference" / "user.txt").write_text("{images}{question}\nAnswer in <answer> </answer>.")
    custom = load_profile(mine)
    assert custom.user_text("Q?", n_images=1) == f"{S}Q?\nAnswer in <answer> </answer>." and custom.layout == REFERENCE.layout
    (tmp_path / "profiles" / "reference" / "user.txt").write_text("no question here")
    mine.write_text(mine.read_text().replace("version: deepeyesv2-reference/1", "version: mine/1"))
    with pytest.raises(ProfileError, match="prompts.user has no {question}"):
        load_profile(mine)
