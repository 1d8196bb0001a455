"""The learnable world: task families a tiny model trained on a CPU can solve, but only with its tools.

The classic demo world (`curation/demo_world.py`) needs skills a 0.5 M-parameter model cannot
have (reading 10-px type, reading a chart); its numbers test the plumbing. Here the skill is the
protocol plus copying and fixed programs, so a model that learns the protocol really scores, and
the tool-free control (the same model with tools off) shows the tools are what it needs:

- perception: a quantity computed from the pixels by one short fixed program: how many red squares
  are in the picture, or the x coordinate of the red bar's left edge. At the model's own image
  budget (a few vision tokens for the whole picture) neither can be seen; the program reads it
  exactly and its stdout is the answer.
- reasoning: arithmetic on two 4-digit operands written in the question. The code copies the
  expression (`print(4821 * 3907)`), the answer copies stdout.
- search: a made-up landmark named in the question whose fact (completion year, height) is only in
  the local search corpus. The query copies the name, the answer copies the fact from the top result.
- direct: control items whose answer is stated in the question. No tool is needed; calling one
  measures whether tool use is selective. With `direct_tool_share` > 0, each is an over-user's item
  with that chance (drawn per sample, so the count varies), as in the paper's cold start (its SFT model calls tools on 95% of MathVista
  items): the probed student solves it neither way, so the selection rule sends it to the cold
  start, and the teacher checks the stated number with a needless call (`print(48213)`) before it
  answers from stdout. Two copies where one would do: the cold start then teaches over-use, and the
  fidelity bench shows whether RL removes it (README, `bench.fidelity`, runs W0 and W1: it does not,
  as the needless call is right at least as often as a direct answer). With `needless_tool="search"`
  the needless call is a search for `number 48213` instead: the real local search returns landmark
  documents holding other 5-digit numbers, and the teacher answers from the question. That call
  can hurt (a model may copy a number from the results), as a needless tool call can in the paper,
  where RL after the cold start makes tool use selective.

Every family has one fixed program or query shape, so what is learnt is the protocol (when to call
which tool, the tags) and copying digits and names token by token (the tokenizer splits digits one
per token, as Qwen's does). Each sample has one image (the perception families need it; the others
carry an uninformative card, so every prompt has the same shape).

The generator writes what the classic one writes (`samples.jsonl`, `corpus.jsonl`,
`image_corpus.jsonl`, `long_cot.jsonl` (direct answers with a card image each),
`replay_scripts.jsonl`) plus `instruct.jsonl`: separate
samples of every family for the instruct stage that makes the base model (`train/base.py`), the
stand-in for an -Instruct checkpoint: the `demo-instruct` persona answers most of them directly and
tries a tool on a small share, some of those attempts buggy (an undefined name), so a model trained on
them has tool calls that RL may keep or drop. On a tool item it answers directly, it states the right
answer as a guess (`instruct_unsure="right"`), which the base can only memorise, or says `unknown`
(`"abstain"`), which it can learn (README, `bench.fidelity`: runs T and U). The replay scripts carry, per sample, the teacher's
turns, the student's (probes) and the instruct persona's.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from curation.demo_world import replay_script, unused_entity_name, wiki_url, write_jsonl  # the classic world's names, URLs, script rows, files

FAMILIES = ("perception", "reasoning", "search", "direct")
TOOL_FAMILIES = ("perception", "reasoning", "search")
INSTRUCT_UNSURE = ("right", "abstain")
NEEDLESS_TOOLS = ("code", "search")


@dataclass(frozen=True)
class LearnableWorldConfig:
    seed: int = 0
    per_family: int = 12  # samples per family for the pipeline (curated, probed, selected, held out)
    instruct_per_family: int = 0  # samples per family for the base model's instruct stage (instruct.jsonl)
    instruct_tool_share: float = 0.15  # instruct turns that try a tool instead of answering directly...
    instruct_bug_share: float = 0.4  # ...and of those, the share whose code has a bug (an undefined name)
    # What the instruct persona answers on a tool-family item it tries no tool on: "right" (the right
    # answer as a guess: no model can learn it, so the base memorises it) or "abstain" ("unknown",
    # which an honest instruct model says and a model can learn).
    instruct_unsure: str = "right"
    distractor_docs: int = 40  # corpus entries that answer nothing asked
    long_cot: int = 100  # direct-answer rows (each with a card image) for the cold-start mix
    image_size: tuple[int, int] = (1600, 200)  # wide enough for a four-digit column
    plant_faults: bool = True  # one exact duplicate and one broken image file
    families: tuple[str, ...] = FAMILIES  # the families generated (a subset learns in fewer steps: the demo's, the slow test's)
    direct_tool_share: float = 0.0  # direct samples sent to the cold start with a teacher that calls a tool needlessly (module docstring)
    needless_tool: str = "code"  # that needless call: "code" (print the stated number) or "search" (look it up; module docstring)

    def __post_init__(self) -> None:
        unknown = set(self.families) - set(FAMILIES)
        if unknown or not self.families:
            raise ValueError(f"families: {sorted(unknown) or 'none given'}; known: {', '.join(FAMILIES)}")
        if self.instruct_unsure not in INSTRUCT_UNSURE:
            raise ValueError(f"instruct_unsure: {self.instruct_unsure!r}; known: {', '.join(INSTRUCT_UNSURE)}")
        if not 0.0 <= self.direct_tool_share <= 1.0:
            raise ValueError(f"direct_tool_share: {self.direct_tool_share!r}; a share from 0 to 1")
        if self.needless_tool not in NEEDLESS_TOOLS:
            raise ValueError(f"needless_tool: {self.needless_tool!r}; known: {', '.join(NEEDLESS_TOOLS)}")



# The fixed perception programs: a red pixel is one whose red channel exceeds its green by more than
# 150 (the background and the clutter never do); one last line per question.
_RED = "import numpy as np\na = np.array(image_1).astype(int)\nred = a[:, :, 0] - a[:, :, 1] > 150\n"
PROGRAMS = {
    "area": _RED + "print(int(red.sum()))",
    "column": _RED + "print(int(red.nonzero()[1].min()))",
}
QUESTIONS = {
    "area": "How many red pixels does the image contain?",
    "column": "In which pixel column does the red bar start? Give the x coordinate of its left edge.",
}
# What is copied sits at the end of the question and has a fixed number of digits per family, so
# the source and its copy lie a fixed number of tokens apart (see the module docstring).
_DIRECT_TEMPLATES = (
    "What is the ticket number? The ticket reads {n}.",
    "What is the door code? A note on the door says {n}.",
    "Which number is on the parcel? Its label says {n}.",
)
SEARCH_QUESTION = "In which year was this landmark completed? Its catalogue number is {n}."


def _code_turn(thought: str, code: str) -> str:
    return f"<think>{thought}</think>\n<code>\n```python\n{code}\n```\n</code>"


def _answer_turn(thought: str, answer: str) -> str:
    return f"<think>{thought}</think>\n<answer>{answer}</answer>"


def _search_turn(thought: str, query: str) -> str:
    payload = json.dumps({"name": "search", "arguments": {"query": query}})
    return f"<think>{thought}</think>\n<tool_call>{payload}</tool_call>"


READ_STDOUT = "The code printed the answer."
READ_RESULT = "The first result states the answer."
DIRECT_THOUGHT = "The answer is stated in the question."
GUESS_THOUGHT = "I will answer from what I see."
ABSTAIN_THOUGHT = "I cannot tell this without measuring it."
ABSTAIN_ANSWER = "unknown"
CHECK_THOUGHT = "I will check the stated number with code."
LOOKUP_THOUGHT = "I will look the stated number up."
LOOKED_UP_THOUGHT = "The results do not name it; the answer is stated in the question."


def _not_red(rng: random.Random) -> tuple[int, int, int]:
    """A clutter colour the red test never matches (green at least 120, so red minus green stays under 150)."""
    return rng.randrange(0, 256), rng.randrange(120, 256), rng.randrange(0, 256)


def _background(rng: random.Random, size: tuple[int, int], shapes: int) -> Image.Image:
    image = Image.new("RGB", size, (rng.randrange(200, 250), rng.randrange(200, 250), rng.randrange(200, 250)))
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(shapes):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(6, w // 5), y0 + rng.randrange(6, h // 5)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=_not_red(rng))
    return image


def _perception(rng: random.Random, cfg: LearnableWorldConfig) -> dict[str, Any]:
    """A red rectangle in a cluttered picture: its area in pixels, or the column of its left edge (four digits either way)."""
    width, height = cfg.image_size
    image = _background(rng, cfg.image_size, 40)
    kind = rng.choice(("area", "column"))
    if kind == "area":
        w = rng.randrange(20, 100)
        h = rng.randrange(-(-1000 // w), min(height - 20, 9999 // w + 1))
        x0, y0 = rng.randrange(5, width - w - 5), rng.randrange(5, height - h - 5)
        answer = w * h
    else:
        w, h = 4, 40
        x0, y0 = rng.randrange(1000, width - 20), rng.randrange(5, height - h - 5)
        answer = x0
    red = (rng.randrange(220, 256), rng.randrange(0, 40), rng.randrange(0, 60))
    ImageDraw.Draw(image).rectangle((x0, y0, x0 + w - 1, y0 + h - 1), fill=red)
    teacher = [_code_turn("I will measure it with a fixed program on the pixels.", PROGRAMS[kind]), _answer_turn(READ_STDOUT, str(answer))]
    return {"image": image, "question": QUESTIONS[kind], "answer": str(answer), "answer_type": "number",
            "wrong_answer": str(answer + rng.choice([-9, -4, 4, 9])), "teacher": teacher, "program": PROGRAMS[kind],
            "meta": {"kind": kind, "box": [x0, y0, w, h]}}


def _card(rng: random.Random) -> Image.Image:
    """An uninformative card: for the families that need no pixels."""
    return _background(rng, (160, 120), 6)


def _reasoning(rng: random.Random, cfg: LearnableWorldConfig) -> dict[str, Any]:
    """A sum or difference of two 4-digit operands whose result has four digits too."""
    if rng.random() < 0.5:
        a, b, op = rng.randrange(1000, 5000), rng.randrange(1000, 5000), "+"
    else:
        a, b, op = rng.randrange(5000, 10000), rng.randrange(1000, 4000), "-"
    expression = f"{a} {op} {b}"
    answer = a + b if op == "+" else a - b
    program = f"print({expression})"
    teacher = [_code_turn("Exact arithmetic: I will compute it with Python.", program), _answer_turn(READ_STDOUT, str(answer))]
    return {"image": _card(rng), "question": f"Compute {expression}.", "answer": str(answer), "answer_type": "number",
            "wrong_answer": str(answer + rng.choice([-10, -1, 1, 10])), "teacher": teacher, "program": program,
            "meta": {"a": a, "b": b, "op": op}}


def _landmark_doc(rng: random.Random, name: str, number: int) -> tuple[dict[str, str], int]:
    year = rng.randrange(1650, 2000)
    return {"title": name, "url": wiki_url(name), "text": f"Catalogue number {number}: {name}, completed in {year}."}, year


def _search(rng: random.Random, cfg: LearnableWorldConfig, used: set[str], numbers: set[int]) -> tuple[dict[str, Any], dict[str, str]]:
    """A made-up landmark known by its catalogue number: the query copies the number, the answer the year."""
    name, number = unused_entity_name(rng, used), _unused_number(rng, numbers)
    doc, year = _landmark_doc(rng, name, number)
    teacher = [_search_turn("I do not know this landmark: I will search for it.", str(number)), _answer_turn(READ_RESULT, str(year))]
    sample = {"image": _card(rng), "question": SEARCH_QUESTION.format(n=number), "answer": str(year), "answer_type": "number",
              "wrong_answer": str(year + rng.choice([-3, -1, 1, 3])), "teacher": teacher, "program": None,
              "meta": {"entity": name, "catalogue": number}}
    return sample, doc


def _unused_number(rng: random.Random, used: set[int]) -> int:
    number = rng.randrange(10000, 100000)
    while number in used:
        number = rng.randrange(10000, 100000)
    used.add(number)
    return number


def _direct(rng: random.Random, cfg: LearnableWorldConfig) -> dict[str, Any]:
    number = rng.randrange(10000, 100000)
    question = rng.choice(_DIRECT_TEMPLATES).format(n=number)
    return {"image": _card(rng), "question": question, "answer": str(number), "answer_type": "number",
            "wrong_answer": str(number + rng.choice([-1, 1])), "teacher": [_answer_turn(DIRECT_THOUGHT, str(number))], "program": None,
            "meta": {}}


# The student's pass rates (without tools, with tools) per family, as the probes see them: the
# tool families are unsolvable without tools and sometimes solved with them; the direct family is
# solved without tools half or all of the time. The paper's rule then sends tool items the student
# never solves to the cold start, those it sometimes solves to RL, and some direct items to RL too,
# where a tool call is not needed (too easy ones are dropped).
_STUDENT_PROFILES: dict[str, tuple[tuple[tuple[float, float], float], ...]] = {
    "tool": (((0.0, 0.0), 0.6), ((0.0, 0.5), 0.25), ((0.0, 1.0), 0.15)),
    "direct": (((0.5, 1.0), 0.5), ((1.0, 1.0), 0.5)),
}


def _student_profile(seed: int, sample_id: str, family: str) -> tuple[float, float]:
    # Its own RNG, so the profiles do not shift the rest of the world.
    profiles, weights = zip(*_STUDENT_PROFILES["direct" if family == "direct" else "tool"], strict=True)
    return random.Random(f"{seed}/student/{sample_id}").choices(profiles, weights)[0]


def _over_used(seed: int, sample_id: str, share: float) -> bool:
    """Whether this direct sample is an over-user's item (`direct_tool_share`); its own RNG, so that a
    share of 0 leaves the world as it was and any share leaves the other samples as they are."""
    return share > 0 and random.Random(f"{seed}/over-used/{sample_id}").random() < share


def _needless_check(item: dict[str, Any], tool: str) -> dict[str, Any]:
    """A direct item whose teacher calls `tool` needlessly before it answers (`direct_tool_share`):
    `code` prints the stated number and answers from stdout; `search` looks up `number <n>`, whose
    results are landmark documents with other 5-digit numbers, and answers from the question."""
    meta = {**item["meta"], "needless_tool": True, "needless_tool_kind": tool}
    if tool == "search":
        teacher = [_search_turn(LOOKUP_THOUGHT, f"number {item['answer']}"), _answer_turn(LOOKED_UP_THOUGHT, item["answer"])]
        return {**item, "teacher": teacher, "program": None, "meta": meta}
    program = f"print({item['answer']})"
    return {**item, "teacher": [_code_turn(CHECK_THOUGHT, program), _answer_turn(READ_STDOUT, item["answer"])], "program": program,
            "meta": meta}


def _buggy(program: str) -> str:
    """The kind of bug a model makes: the image or a value under a name that does not exist."""
    return program.replace("image_1", "image", 1) if "image_1" in program else program.replace("print(", "print(result + ", 1)


def _instruct_turns(rng: random.Random, cfg: LearnableWorldConfig, family: str, item: dict[str, Any]) -> list[str]:
    """What the instruct persona says: a direct answer, or on a small share a tool attempt (some buggy)."""
    if family == "direct":
        direct = [_answer_turn(DIRECT_THOUGHT, item["answer"])]
    elif cfg.instruct_unsure == "abstain":
        direct = [_answer_turn(ABSTAIN_THOUGHT, ABSTAIN_ANSWER)]
    else:
        direct = [_answer_turn(GUESS_THOUGHT, item["answer"])]
    if family == "direct" or rng.random() >= cfg.instruct_tool_share:
        return direct
    turns = list(item["teacher"])
    if item["program"] is not None and rng.random() < cfg.instruct_bug_share:
        turns[0] = turns[0].replace(item["program"], _buggy(item["program"]))
        turns[-1] = _answer_turn("The code failed, so I will answer without it.", item["answer"])
    return turns


def world_files(out_dir: str | Path) -> dict[str, str]:
    """The files a learnable world in `out_dir` consists of."""
    out = Path(out_dir)
    names = {"samples_path": "samples.jsonl", "corpus_path": "corpus.jsonl", "image_corpus_path": "image_corpus.jsonl",
             "long_cot_path": "long_cot.jsonl", "scripts_path": "replay_scripts.jsonl", "instruct_path": "instruct.jsonl"}
    return {key: str(out / name) for key, name in names.items()}


def _long_cot(rng: random.Random, index: int, out: Path, used: set[str]) -> dict[str, Any]:
    """A direct item answered without a tool (the cold start's long-CoT rows): the answer is in the
    question, and the row carries an uninformative card as every sample does, so the mix shows
    answering directly on prompts shaped like the tool items' (`synth.long_cot.opening: tools`).
    The question is not in `used` (added to it): a drawn repeat is drawn again, so every row of a
    large `long_cot` is its own (270,000 questions exist; `world.long_cot` is at most 100,000), and
    the rows before the first repeat stay as they were."""
    number = rng.randrange(10000, 100000)
    question = rng.choice(_DIRECT_TEMPLATES).format(n=number)
    while question in used:
        number = rng.randrange(10000, 100000)
        question = rng.choice(_DIRECT_TEMPLATES).format(n=number)
    used.add(question)
    row_id = f"learnable-cot-{index:05d}"
    image = Path("images") / f"{row_id}.png"
    _card(rng).save(out / image)
    return {"id": row_id, "question": question, "response": _answer_turn(DIRECT_THOUGHT, str(number)),
            "answer": str(number), "images": [str(image)]}


def generate_learnable_world(out_dir: str | Path, cfg: LearnableWorldConfig | None = None) -> dict[str, Any]:
    """Write the learnable world into `out_dir`; return a summary with the file paths and counts.

    Samples of all families are written in a shuffled order, so any prefix of the held-out pool
    (`eval.max_samples`) holds every family."""
    cfg = cfg or LearnableWorldConfig()
    rng = random.Random(cfg.seed)
    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    photo_dir = out / "image_corpus"
    photo_dir.mkdir(exist_ok=True)
    used_names: set[str] = set()
    used_numbers: set[int] = set()
    corpus: list[dict[str, str]] = []
    image_corpus: list[dict[str, str]] = []
    scripts: list[dict[str, Any]] = []
    sets: dict[str, list[dict[str, Any]]] = {"samples": [], "instruct": []}
    over_used_count = 0  # direct samples with the over-user's needless call (`direct_tool_share`)

    for split, count in (("samples", cfg.per_family), ("instruct", cfg.instruct_per_family)):
        prefix = "learn" if split == "samples" else "instruct"
        for family in (f for f in FAMILIES if f in cfg.families):
            for i in range(count):
                if family == "perception":
                    item = _perception(rng, cfg)
                elif family == "reasoning":
                    item = _reasoning(rng, cfg)
                elif family == "search":
                    item, doc = _search(rng, cfg, used_names, used_numbers)
                    corpus.append(doc)
                else:
                    item = _direct(rng, cfg)
                sample_id = f"{prefix}-{family}-{i:04d}"
                over_used = family == "direct" and split == "samples" and _over_used(cfg.seed, sample_id, cfg.direct_tool_share)
                if over_used:
                    item = _needless_check(item, cfg.needless_tool)
                    over_used_count += 1
                image_path = image_dir / f"{sample_id}.png"
                item["image"].save(image_path)
                sets[split].append({"id": sample_id, "category": family, "question": item["question"], "answer": item["answer"],
                                    "answer_type": item["answer_type"], "images": [str(image_path.relative_to(out))],
                                    "meta": {**item["meta"], "world": "learnable"}})
                no_tools, with_tools = (0.0, 0.0) if over_used else _student_profile(cfg.seed, sample_id, family)
                guess = GUESS_THOUGHT if family != "direct" else DIRECT_THOUGHT
                script = replay_script(sample_id, image_path, item, (no_tools, with_tools),
                                       [_answer_turn(guess, item["answer"])], [_answer_turn(guess, item["wrong_answer"])])
                scripts.append({**script, "instruct": _instruct_turns(rng, cfg, family, item)})
    for _ in range(cfg.distractor_docs):
        corpus.append(_landmark_doc(rng, unused_entity_name(rng, used_names), _unused_number(rng, used_numbers))[0])
    # The image corpus: the local image search needs one; nothing here asks for it.
    photo = _background(rng, (128, 128), 8)
    photo.save(photo_dir / "placeholder.png")
    image_corpus.append({"image": "image_corpus/placeholder.png", "title": "placeholder", "url": wiki_url("placeholder")})
    rng.shuffle(corpus)
    samples = sets["samples"]
    rng.shuffle(samples)
    if cfg.plant_faults and samples:
        # An exact duplicate and an image that cannot be decoded: curation removes the one, quarantines the other.
        samples.append({**samples[0], "id": f"{samples[0]['id']}-dup"})
        broken = image_dir / "broken.png"
        broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        samples.append({**samples[-2], "id": "learn-broken-image", "images": [str(broken.relative_to(out))]})
    files = world_files(out)
    write_jsonl(Path(files["samples_path"]), samples)
    write_jsonl(Path(files["instruct_path"]), sets["instruct"])
    write_jsonl(Path(files["corpus_path"]), corpus)
    write_jsonl(Path(files["image_corpus_path"]), image_corpus)
    questions: set[str] = set()
    write_jsonl(Path(files["long_cot_path"]), [_long_cot(rng, i, out, questions) for i in range(cfg.long_cot)])
    write_jsonl(Path(files["scripts_path"]), scripts)
    summary = {"kind": "learnable", "seed": cfg.seed, "samples": len(samples), "instruct_samples": len(sets["instruct"]),
               "corpus_docs": len(corpus), "long_cot_rows": cfg.long_cot,
               "over_used_direct": over_used_count, "needless_tool": cfg.needless_tool, **files}
    (out / "world.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
