"""The learnable world: every family's fixed program or query really yields its answer, copies have a
fixed length, the tool-free guess has nothing to go on, and the replay personas play their parts."""

import json
import re
from pathlib import Path

import pytest

from curation.learnable_world import FAMILIES, PROGRAMS, LearnableWorldConfig, generate_learnable_world
from synth.replay import ReplaySettings, scripted_turn
from synth.tools.kernel import PythonKernel
from synth.tools.sandbox import KernelPool, SandboxConfig
from synth.tools.search import LocalTextSearch


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_learnable_world(tmp_path_factory.mktemp("learnable"), LearnableWorldConfig(seed=5, per_family=6, instruct_per_family=8,
                                                                                                instruct_tool_share=0.5, distractor_docs=20))


def rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_every_family_in_a_shuffled_order_with_fixed_length_answers(world):
    samples = [s for s in rows(world["samples_path"]) if not s["id"].endswith("-dup") and s["id"] != "learn-broken-image"]
    assert {s["category"] for s in samples} == set(FAMILIES)
    assert [s["category"] for s in samples[:4]] != sorted(s["category"] for s in samples[:4]) or len({s["category"] for s in samples[:8]}) > 1
    lengths = {}
    for sample in samples:
        lengths.setdefault(sample["category"], set()).add(len(sample["answer"]))
    assert lengths == {"perception": {4}, "reasoning": {4}, "search": {4}, "direct": {5}}
    instruct = rows(world["instruct_path"])
    assert len(instruct) == 8 * len(FAMILIES) and not {s["id"] for s in instruct} & {s["id"] for s in samples}


def test_the_teachers_programs_and_queries_give_the_answers(world):
    root = Path(world["samples_path"]).parent
    scripts = {s["sample_id"]: s for s in rows(world["scripts_path"])}
    samples = [s for s in rows(world["samples_path"]) if s["id"] in scripts]
    search = LocalTextSearch(world["corpus_path"], root / "index")
    with KernelPool(SandboxConfig(isolation="auto", allow_unisolated=True)) as pool:
        for sample in samples:
            first, last = scripts[sample["id"]]["teacher"][0], scripts[sample["id"]]["teacher"][-1]
            assert re.search(r"<answer>(.*)</answer>", last).group(1) == sample["answer"]
            if sample["category"] in ("perception", "reasoning"):
                code = re.search(r"```python\n(.*)\n```", first, re.S).group(1)
                with PythonKernel([(root / sample["images"][0]).read_bytes()], pool) as kernel:
                    result = kernel.execute(code)
                assert (result.status, result.stdout.strip()) == ("ok", sample["answer"]), sample["id"]
            elif sample["category"] == "search":
                query = json.loads(re.search(r"<tool_call>(.*)</tool_call>", first).group(1))["arguments"]["query"]
                assert query in sample["question"]
                top = search.search(query, 1)[0]
                assert top["snippet"].endswith(f"completed in {sample['answer']}.")
            else:
                assert sample["answer"] in sample["question"] and len(scripts[sample["id"]]["teacher"]) == 1



def test_perception_programs_are_fixed_and_the_picture_is_not_readable_at_the_models_budget(world):
    root = Path(world["samples_path"]).parent
    scripts = {s["sample_id"]: s for s in rows(world["scripts_path"])}
    perception = [s for s in rows(world["samples_path"]) if s["category"] == "perception" and s["id"] in scripts]
    assert {re.search(r"```python\n(.*)\n```", scripts[s["id"]]["teacher"][0], re.S).group(1) for s in perception} <= set(PROGRAMS.values())
    from PIL import Image

    # At the tiny model's budget (4,096 pixels for the whole 1600×200 picture) a pixel is 80 pixels of
    # the original: a column or an area to the pixel cannot be read without the program.
    with Image.open(root / perception[0]["images"][0]) as image:
        assert image.size == (1600, 200)


def test_the_instruct_persona_answers_directly_or_tries_a_tool(world):
    scripts = rows(world["scripts_path"])
    instruct = [s for s in scripts if s["sample_id"].startswith("instruct-")]
    settings = ReplaySettings(scripts_path=Path(world["scripts_path"]))
    first_turns = [scripted_turn(s, "instruct", 0, 0, settings) for s in instruct]
    direct = [t for t in first_turns if "<answer>" in t]
    tools = [t for t in first_turns if "<code>" in t or "<tool_call>" in t]
    assert direct and tools and len(direct) + len(tools) == len(instruct)
    # Some attempts are buggy: a name that does not exist in the kernel.
    assert any("np.array(image)" in t or "print(result + " in t for t in tools)
    # The direct family never tries a tool.
    assert all("<answer>" in scripted_turn(s, "instruct", 0, 0, settings) for s in instruct if "-direct-" in s["sample_id"])


def test_an_abstaining_instruct_persona_says_unknown_where_it_tries_no_tool(tmp_path):
    made = generate_learnable_world(tmp_path, LearnableWorldConfig(seed=5, per_family=2, instruct_per_family=12, instruct_tool_share=0.25,
                                                                  distractor_docs=2, long_cot=2, instruct_unsure="abstain"))
    answers = {s["id"]: s["answer"] for s in rows(made["instruct_path"])}
    settings = ReplaySettings(scripts_path=Path(made["scripts_path"]))
    first = {s["sample_id"]: scripted_turn(s, "instruct", 0, 0, settings) for s in rows(made["scripts_path"]) if s["sample_id"] in answers}
    said = {i: re.search(r"<answer>(.*?)</answer>", t).group(1) for i, t in first.items() if "<answer>" in t}
    tool_items = {i: a for i, a in said.items() if "-direct-" not in i}
    assert tool_items and set(tool_items.values()) == {"unknown"}
    # The direct family still answers with the number its question states; tool attempts stay.
    assert all(a == answers[i] for i, a in said.items() if "-direct-" in i) and len(said) < len(first)


def test_an_unknown_instruct_unsure_is_refused():
    with pytest.raises(ValueError, match="instruct_unsure: 'maybe'; known: right, abstain"):
        LearnableWorldConfig(instruct_unsure="maybe")


def test_an_over_users_direct_items_go_to_the_cold_start_with_a_needless_call(tmp_path):
    """`direct_tool_share`: that share of the pipeline's direct samples is probed as unsolved either way
    (the selection rule's cold start), and the teacher prints the stated number before answering from
    stdout; every other sample, and the instruct persona's direct answers, stay as with a share of 0."""
    from curation.select import SelectConfig, rule_pool

    settings = dict(seed=7, per_family=40, instruct_per_family=4, distractor_docs=2, long_cot=2)
    plain = generate_learnable_world(tmp_path / "plain", LearnableWorldConfig(**settings))
    over = generate_learnable_world(tmp_path / "over", LearnableWorldConfig(**settings, direct_tool_share=0.5))
    plain_scripts = {s["sample_id"]: s for s in rows(plain["scripts_path"])}
    over_scripts = {s["sample_id"]: s for s in rows(over["scripts_path"])}
    samples = {s["id"]: s for s in rows(over["samples_path"])}
    needless = {i for i, s in samples.items() if s["meta"].get("needless_tool")}
    direct = {i for i, s in samples.items() if s["category"] == "direct" and i in over_scripts}
    assert needless < direct and 0.3 < len(needless) / len(direct) < 0.7  # about half of 40
    assert over["over_used_direct"] == len(needless) and plain["over_used_direct"] == 0  # world.json says how many
    root = Path(over["samples_path"]).parent
    with KernelPool(SandboxConfig(isolation="auto", allow_unisolated=True)) as pool:
        for sample_id in needless:
            script, sample = over_scripts[sample_id], samples[sample_id]
            code = re.search(r"```python\n(.*)\n```", script["teacher"][0], re.S).group(1)
            assert code == f"print({sample['answer']})" and sample["answer"] in sample["question"]
            with PythonKernel([(root / sample["images"][0]).read_bytes()], pool) as kernel:
                assert kernel.execute(code).stdout.strip() == sample["answer"]
            assert script["teacher"][-1].endswith(f"<answer>{sample['answer']}</answer>")
            pass_rates = (script["student_pass_rate"], script["student_tool_pass_rate"])
            assert rule_pool(*pass_rates, SelectConfig()) == ("coldstart", None)
            assert "<answer>" in script["instruct"][0]  # the instruct persona still answers it directly
    for sample_id, script in over_scripts.items():
        if sample_id not in needless:
            assert script == plain_scripts[sample_id], sample_id
    assert Path(over["instruct_path"]).read_text() == Path(plain["instruct_path"]).read_text()


def test_a_needless_search_marks_the_same_items_and_its_results_hold_other_numbers(tmp_path):
    """`needless_tool="search"`: the same draws mark the same direct samples as with code; the teacher
    looks up `number <n>` and answers from the question; the real local search's results for that
    query hold 5-digit numbers other than the answer, the distraction that makes the call a risk."""
    settings = dict(seed=3, per_family=30, distractor_docs=5, long_cot=1, direct_tool_share=0.5)
    code = generate_learnable_world(tmp_path / "code", LearnableWorldConfig(**settings))
    search = generate_learnable_world(tmp_path / "search", LearnableWorldConfig(**settings, needless_tool="search"))
    assert json.loads((tmp_path / "search" / "world.json").read_text())["needless_tool"] == "search"
    assert code["needless_tool"] == "code"

    def marked(world):
        return {s["id"]: s for s in rows(world["samples_path"]) if s["meta"].get("needless_tool")}

    by_code, by_search = marked(code), marked(search)
    assert by_search and set(by_search) == set(by_code) and search["over_used_direct"] == code["over_used_direct"] == len(by_search)
    assert {s["meta"]["needless_tool_kind"] for s in by_code.values()} == {"code"}
    assert {s["meta"]["needless_tool_kind"] for s in by_search.values()} == {"search"}
    scripts = {s["sample_id"]: s for s in rows(search["scripts_path"])}
    engine = LocalTextSearch(search["corpus_path"], tmp_path / "index")
    for sample_id, sample in by_search.items():
        first, last = scripts[sample_id]["teacher"][0], scripts[sample_id]["teacher"][-1]
        call = json.loads(re.search(r"<tool_call>(.*)</tool_call>", first, re.S).group(1))
        assert call == {"name": "search", "arguments": {"query": f"number {sample['answer']}"}}
        assert last.endswith(f"<answer>{sample['answer']}</answer>") and sample["answer"] in sample["question"]
        found = engine.search(call["arguments"]["query"], 3)
        numbers = {n for hit in found for n in re.findall(r"\b\d{5}\b", hit["snippet"])}
        assert numbers - {sample["answer"]}, sample_id


def test_an_unknown_needless_tool_is_refused():
    with pytest.raises(ValueError, match="needless_tool: 'image_search'; known: code, search"):
        LearnableWorldConfig(needless_tool="image_search")


def test_a_direct_tool_share_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="direct_tool_share: 1.5; a share from 0 to 1"):
        LearnableWorldConfig(direct_tool_share=1.5)


def test_world_direct_tool_share_reaches_the_generator(tmp_path):
    from curation.worlds import generate
    from flows.config import WorldSettings

    settings = WorldSettings(kind="learnable", per_family=3, distractor_docs=1, long_cot=1, direct_tool_share=1.0).generator_settings()
    generate("learnable", tmp_path, settings)
    direct = [s for s in rows(tmp_path / "samples.jsonl") if s["category"] == "direct"]
    assert direct and all(s["meta"].get("needless_tool") for s in direct)


def test_the_plan_says_a_worlds_over_user_share():
    from flows.config import PipelineConfig
    from flows.pipeline import plan

    cfg = PipelineConfig.model_validate({"name": "w", "world": {"kind": "learnable", "per_family": 2, "long_cot": 7, "direct_tool_share": 0.5}})
    assert next(step["does"] for step in plan(cfg, "run") if step["stage"] == "world") == (
        "generate the learnable world, 2 samples per family, 7 long-CoT rows, each direct sample an over-user's item (a needless code call) "
        "with chance 0.5 (seed 0)")


def test_a_needless_search_is_replayed_as_synthesis_runs_it(tmp_path):
    """Through the replay server and the agent loop (the synthesis path), the teacher's needless search
    runs on the world's corpus and the episode ends with the stated number, scored right."""
    from curation.schema import ImageRef, Sample
    from synth.runtime import aio
    from synth.runtime.agent import AgentConfig, open_toolbox, run_episode
    from synth.runtime.policy import EndpointPolicy
    from synth.tools.search import SearchConfig
    from tests.conftest import start_replay

    world = generate_learnable_world(tmp_path / "world", LearnableWorldConfig(seed=3, per_family=2, distractor_docs=5, long_cot=1,
                                                                              families=("search", "direct"), direct_tool_share=1.0,
                                                                              needless_tool="search", plant_faults=False))
    root = Path(world["samples_path"]).parent
    row = next(s for s in rows(world["samples_path"]) if s["meta"].get("needless_tool"))
    sample = Sample(id=row["id"], source="learnable", category=row["category"], question=row["question"], answer=row["answer"],
                    answer_type=row["answer_type"], images=[ImageRef(bytes=(root / row["images"][0]).read_bytes())])
    server, url = start_replay(world, tmp_path)
    try:
        agent = AgentConfig(max_turns=4, max_tokens_per_turn=512)

        async def episode():
            policy = EndpointPolicy(url, "demo-teacher")
            try:
                return await run_episode(sample, policy, tools, agent, attempt=0)
            finally:
                await policy.aclose()

        with open_toolbox(agent, SearchConfig(corpus_path=world["corpus_path"])) as tools:
            result = aio.run(episode())
    finally:
        server.stop()
    assert [c["tool"] for c in result["tool_calls"]] == ["search"] and result["tool_calls"][0]["outcome"] == "ok"
    assistant = [m["content"][0]["text"] for m in result["messages"] if m["role"] == "assistant"]
    assert len(assistant) == 2 and f"number {row['answer']}" in assistant[0]
    assert assistant[-1].endswith(f"<answer>{row['answer']}</answer>") and result["correct"]
