"""The demo world: a seeded generator of tool-worthy tasks with known answers.

Three task families, each where a tool really helps:

- perception: a five-digit tag code printed in tiny type somewhere in a large cluttered image;
  unreadable at a VLM's downscaled resolution, readable after a crop and zoom.
- reasoning: a bar chart with value labels; the question needs arithmetic on the values.
- search: an image of a made-up landmark; the question asks a fact that only the local search
  corpus knows. Half carry the name on a plaque (text search finds the fact); the other half do
  not, and an image search (perceptual hash over the image corpus) names the landmark first.

The generator writes a generic JSONL source (`samples.jsonl`, images as files), the local search
corpora (`corpus.jsonl`: title, url, text; `image_corpus.jsonl`: image, title, url) and the replay server's scripted turns
(`replay_scripts.jsonl`): a tool-using teacher and a student per sample, with the student's pass
rates without and with tools. It also plants
an exact duplicate and an undecodable image, so curation has something real to remove.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from curation.images import pixel_digest

FAMILIES = ("perception", "reasoning", "search")


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    per_family: int = 12
    perception_size: tuple[int, int] = (1024, 768)
    chart_size: tuple[int, int] = (640, 480)
    landmark_size: tuple[int, int] = (512, 512)
    distractor_docs: int = 40
    long_cot: int = 100  # text-only long-CoT rows for the cold-start mix
    plant_faults: bool = True  # one exact duplicate and one broken image file

    def __post_init__(self) -> None:
        """Refuse a world that would be empty or malformed (raises ValueError naming the field)."""
        for name, least in (("per_family", 1), ("distractor_docs", 0), ("long_cot", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: {value!r} is not a whole number >= {least}")
        for name in ("perception_size", "chart_size", "landmark_size"):
            size = getattr(self, name)
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 64 for v in size):
                raise ValueError(f"{name}: {size!r} is not (width, height) of at least 64 pixels each")


_SYLLABLES = ["vel", "mor", "qua", "zen", "tor", "ish", "bra", "lun", "kad", "rix", "oth", "mei", "san", "dor", "fel"]
_KINDS = ["Tower", "Bridge", "Observatory", "Lighthouse", "Gate", "Library", "Aqueduct"]
_PEOPLE = ["Ilsa Marrow", "Tobin Reyes", "Oda Quill", "Piet Varga", "Nell Ashdown", "Ravi Okonkwo", "Mira Solberg"]


def entity_name(rng: random.Random, parts: int = 2) -> str:
    """A made-up name of `parts` syllables, capitalized (e.g. `Velmor`)."""
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _clutter(draw: ImageDraw.ImageDraw, rng: random.Random, size: tuple[int, int], count: int) -> None:
    w, h = size
    for _ in range(count):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(10, w // 4), y0 + rng.randrange(10, h // 4)
        color = tuple(rng.randrange(90, 230) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)


def _think_code(thought: str, code: str) -> str:
    return f"<think>{thought}</think>\n<code>\n```python\n{code}\n```\n</code>"


def _think_answer(thought: str, answer: str) -> str:
    return f"<think>{thought}</think>\n<answer>{answer}</answer>"


def _perception(rng: random.Random, cfg: WorldConfig, index: int) -> dict[str, Any]:
    w, h = cfg.perception_size
    image = Image.new("RGB", (w, h), tuple(rng.randrange(200, 250) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    _clutter(draw, rng, (w, h), 60)
    code = f"{rng.randrange(10000, 100000)}"
    tag_w, tag_h = 46, 16
    x0, y0 = rng.randrange(20, w - tag_w - 20), rng.randrange(20, h - tag_h - 20)
    draw.rectangle((x0, y0, x0 + tag_w, y0 + tag_h), fill=(255, 255, 255), outline=(0, 0, 0))
    draw.text((x0 + 4, y0 + 3), code, fill=(0, 0, 0), font=_font(10))
    box = (x0 - 8, y0 - 8, x0 + tag_w + 8, y0 + tag_h + 8)
    question = "A small white tag with a five-digit code is printed somewhere in the image. What is the code?"
    wrong = str(int(code) + rng.choice([-1, 1]) * rng.randrange(1, 999))
    teacher = [
        _think_code(
            "The tag is tiny; I should locate it and zoom in before reading the digits.",
            f"tag = image_1.crop({box})\ntag = tag.resize((tag.width * 4, tag.height * 4))\ntag.show()",
        ),
        _think_answer(f"The zoomed crop shows the code {code} clearly.", code),
    ]
    return {
        "image": image,
        "question": question,
        "answer": code,
        "answer_type": "text",
        "wrong_answer": wrong,
        "teacher": teacher,
        "meta": {"tag_box": list(box)},
    }


def _reasoning(rng: random.Random, cfg: WorldConfig, index: int) -> dict[str, Any]:
    w, h = cfg.chart_size
    labels = list("ABCDEF")[: rng.randrange(4, 7)]
    values = {label: rng.randrange(5, 95) for label in labels}
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    top, bottom, left = 40, h - 40, 50
    draw.line((left, top, left, bottom), fill=(0, 0, 0))
    draw.line((left, bottom, w - 20, bottom), fill=(0, 0, 0))
    bar_w = (w - left - 40) // len(labels)
    for i, label in enumerate(labels):
        x0 = left + 10 + i * bar_w
        y0 = bottom - int(values[label] / 100 * (bottom - top))
        color = tuple(rng.randrange(40, 200) for _ in range(3))
        draw.rectangle((x0, y0, x0 + bar_w - 20, bottom), fill=color)
        draw.text((x0 + 4, y0 - 14), str(values[label]), fill=(0, 0, 0), font=_font(11))
        draw.text((x0 + (bar_w - 20) // 2 - 3, bottom + 6), label, fill=(0, 0, 0), font=_font(12))
    a, b = rng.sample(labels, 2)
    kind = rng.choice(["range", "sum", "diff"])
    if kind == "range":
        question = "What is the difference between the largest and the smallest value in the bar chart?"
        answer = max(values.values()) - min(values.values())
        expr = "max(values.values()) - min(values.values())"
    elif kind == "sum":
        question = f"What is the sum of the values of bars {a} and {b} in the chart?"
        answer = values[a] + values[b]
        expr = f"values['{a}'] + values['{b}']"
    else:
        question = f"By how much does bar {a} exceed bar {b}? Give a negative number if it is smaller."
        answer = values[a] - values[b]
        expr = f"values['{a}'] - values['{b}']"
    teacher = [
        _think_code(
            "I will read each bar's label and compute the result exactly instead of estimating.",
            f"values = {values!r}\nresult = {expr}\nprint(result)",
        ),
        _think_answer(f"The computation gives {answer}.", str(answer)),
    ]
    return {
        "image": image,
        "question": question,
        "answer": str(answer),
        "answer_type": "number",
        "wrong_answer": str(answer + rng.choice([-3, -2, 2, 3])),
        "teacher": teacher,
        "meta": {"values": values, "kind": kind},
    }


def _scene(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, tuple(rng.randrange(120, 200) for _ in range(3)))
    _clutter(ImageDraw.Draw(image), rng, size, 12)
    return image


def _reference_photo(scene: Image.Image, rng: random.Random) -> Image.Image:
    """Another picture of the same landmark: rescaled and re-exposed, so only a perceptual hash matches."""
    w, h = scene.size
    photo = scene.resize((int(w * 0.8), int(h * 0.8)))
    return ImageEnhance.Brightness(photo).enhance(rng.uniform(0.9, 1.1))


def _search(rng: random.Random, cfg: WorldConfig, used: set[str]) -> tuple[dict[str, Any], dict[str, str], Image.Image]:
    """A made-up landmark. With a plaque, its name is in the image and a text search finds the fact;
    without one, an image search names it first (the paper's image search → text search chain)."""
    name = unused_entity_name(rng, used)
    city = f"{entity_name(rng, 3)}haven"
    year = rng.randrange(1650, 1990)
    founder = rng.choice(_PEOPLE)
    w, h = cfg.landmark_size
    scene = _scene(rng, (w, h))
    plaque = rng.random() < 0.5
    image = scene.copy()
    if plaque:
        draw = ImageDraw.Draw(image)
        draw.rectangle((40, h - 70, w - 40, h - 20), fill=(250, 245, 230), outline=(60, 40, 20), width=3)
        draw.text((60, h - 58), name, fill=(30, 20, 10), font=_font(24))
    subject = "the landmark on the plaque in this image" if plaque else "the landmark shown in this image"
    fact = rng.choice(["year", "city"])
    if fact == "year":
        question = f"According to public records, in what year was {subject} completed?"
        answer, answer_type, wrong = str(year), "number", str(year + rng.choice([-7, 5, 11]))
        query = f"{name} completed year"
    else:
        question = f"In which city does {subject} stand?"
        answer, answer_type, wrong = city, "text", f"{entity_name(rng, 3)}haven"
        query = f"{name} location city"
    doc = {
        "title": name,
        "url": wiki_url(name),
        "text": (
            f"{name} is a landmark in the city of {city}. Construction was led by {founder} "
            f"and the {name.split()[-1].lower()} was completed in {year}."
        ),
    }
    text_search = f'<tool_call>{{"name": "search", "arguments": {{"query": "{query}"}}}}</tool_call>'
    if plaque:
        teacher = [f'<think>The plaque reads "{name}", but I do not know this landmark; I should search for it.</think>\n{text_search}']
    else:
        teacher = [
            '<think>No name is visible, so I will search with the image to identify the landmark.</think>\n'
            '<tool_call>{"name": "image_search"}</tool_call>',
            f"<think>The closest image match is {name}. Now I need the fact itself.</think>\n{text_search}",
        ]
    teacher.append(_think_answer(f"The search result about {name} states the answer: {answer}.", answer))
    sample = {
        "image": image,
        "question": question,
        "answer": answer,
        "answer_type": answer_type,
        "wrong_answer": wrong,
        "teacher": teacher,
        "meta": {"entity": name, "fact": fact, "plaque": plaque},
    }
    return sample, doc, _reference_photo(scene, rng)


# The student's pass rates (without tools, with tools) per sample: mostly hard without tools, as
# the families are built to be; the mix gives the selection stage every case of the paper's rule.
_STUDENT_PROFILES = (
    ((0.0, 0.0), 0.4),  # unsolved even with tools: cold start
    ((0.0, 1.0), 0.3),  # solved with tools: RL
    ((0.0, 0.5), 0.15),  # sometimes solved with tools: RL
    ((1.0, 1.0), 0.15),  # solved without tools: too easy, dropped
)


def _student_profile(seed: int, sample_id: str) -> tuple[float, float]:
    # Its own RNG, so the profiles do not shift the rest of the world.
    profiles, weights = zip(*_STUDENT_PROFILES, strict=True)
    return random.Random(f"{seed}/student/{sample_id}").choices(profiles, weights)[0]


def replay_script(sample_id: str, image_path: Path, item: dict[str, Any], pass_rates: tuple[float, float],
                  student: list[str], student_wrong: list[str]) -> dict[str, Any]:
    """One replay-server script row (the fields `synth/replay.py` reads): the sample's question,
    answers and image digest, the student's pass rates (without, with tools), the teacher's turns
    (`item["teacher"]`) and the student's right and wrong direct turns."""
    return {
        "sample_id": sample_id,
        "image_digest": pixel_digest(image_path.read_bytes()),
        "question": item["question"],
        "answer": item["answer"],
        "wrong_answer": item["wrong_answer"],
        "student_pass_rate": pass_rates[0],
        "student_tool_pass_rate": pass_rates[1],
        "teacher": item["teacher"],
        "student": student,
        "student_wrong": student_wrong,
    }


def wiki_url(name: str) -> str:
    """The demo corpus's URL of an entity (`https://demo.world/wiki/velmor-tower`)."""
    return f"https://demo.world/wiki/{name.lower().replace(' ', '-')}"


def unused_entity_name(rng: random.Random, used: set[str]) -> str:
    """A `<name> <kind>` entity (`Velmor Tower`) not in `used`, added to it."""
    name = f"{entity_name(rng)} {rng.choice(_KINDS)}"
    tries = 0
    while name in used:  # two syllables give 1,575 names: big worlds get longer ones
        tries += 1
        name = f"{entity_name(rng, 2 + tries // 20)} {rng.choice(_KINDS)}"
    used.add(name)
    return name


def _distractor(rng: random.Random, used: set[str]) -> dict[str, str]:
    name = unused_entity_name(rng, used)
    return {"title": name, "url": wiki_url(name), "text": f"{name} is a landmark in {entity_name(rng, 3)}haven, restored in {rng.randrange(1700, 2020)}."}


_ITEMS = ["crates", "jars", "lanterns", "maps", "coins", "tiles", "ropes"]


def _long_cot(rng: random.Random, index: int, used: set[str]) -> dict[str, str]:
    """A text-only arithmetic word problem with a step-by-step reasoning trace, whose question is not
    in `used` (added to it): a drawn repeat is drawn again, so every row of a large `long_cot` is
    usable (synthesis quarantines a repeat as `long_cot_duplicate`) and the rows before the first
    repeat stay as they were. About 580,000 questions exist; `world.long_cot` is at most 100,000."""
    while True:
        item = rng.choice(_ITEMS)
        a, b, c = rng.randrange(3, 20), rng.randrange(2, 12), rng.randrange(2, 9)
        lost = rng.randrange(1, a * b)
        total = a * b * c - lost * c
        question = (f"A workshop packs {a} shelves with {b} {item} each, and has {c} identical workshops. "
                    f"Each workshop loses {lost} {item}. How many {item} are left in all?")
        if question not in used:
            break
    used.add(question)
    response = (
        f"<think>Each workshop starts with {a} × {b} = {a * b} {item}. After losing {lost}, it has "
        f"{a * b} − {lost} = {a * b - lost}. With {c} workshops: {c} × {a * b - lost} = {total}. "
        f"Check: {c} × {a * b} = {a * b * c}, minus {c} × {lost} = {lost * c}, gives {total}.</think>\n"
        f"<answer>{total}</answer>"
    )
    return {"id": f"demo-cot-{index:05d}", "question": question, "response": response, "answer": str(total)}


def world_files(out_dir: str | Path) -> dict[str, str]:
    """The files a world in `out_dir` consists of (the flows find them here when run one by one)."""
    out = Path(out_dir)
    names = {"samples_path": "samples.jsonl", "corpus_path": "corpus.jsonl", "image_corpus_path": "image_corpus.jsonl",
             "long_cot_path": "long_cot.jsonl", "scripts_path": "replay_scripts.jsonl"}
    return {key: str(out / name) for key, name in names.items()}


def generate_world(out_dir: str | Path, cfg: WorldConfig | None = None) -> dict[str, Any]:
    """Write the demo world into `out_dir`; return a summary with the file paths and counts."""
    cfg = cfg or WorldConfig()
    rng = random.Random(cfg.seed)
    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    scripts: list[dict[str, Any]] = []
    corpus: list[dict[str, str]] = []
    image_corpus: list[dict[str, str]] = []
    photo_dir = out / "image_corpus"
    photo_dir.mkdir(exist_ok=True)
    used_names: set[str] = set()

    def add_photo(name: str, photo: Image.Image) -> None:
        path = photo_dir / f"{name.lower().replace(' ', '-')}.png"
        photo.save(path)
        image_corpus.append({"image": str(path.relative_to(out)), "title": name, "url": wiki_url(name)})

    for family in FAMILIES:
        for i in range(cfg.per_family):
            if family == "perception":
                item = _perception(rng, cfg, i)
            elif family == "reasoning":
                item = _reasoning(rng, cfg, i)
            else:
                item, doc, photo = _search(rng, cfg, used_names)
                corpus.append(doc)
                add_photo(doc["title"], photo)
            sample_id = f"demo-{family}-{i:04d}"
            no_tools, with_tools = _student_profile(cfg.seed, sample_id)
            image_path = image_dir / f"{sample_id}.png"
            item["image"].save(image_path)
            samples.append(
                {
                    "id": sample_id,
                    "category": family,
                    "question": item["question"],
                    "answer": item["answer"],
                    "answer_type": item["answer_type"],
                    "images": [str(image_path.relative_to(out))],
                    "meta": item["meta"],
                }
            )
            thought = "I will answer directly from the image."
            scripts.append(replay_script(sample_id, image_path, item, (no_tools, with_tools),
                                         [_think_answer(thought, item["answer"])], [_think_answer(thought, item["wrong_answer"])]))
    for _ in range(cfg.distractor_docs):
        doc = _distractor(rng, used_names)
        corpus.append(doc)
        add_photo(doc["title"], _reference_photo(_scene(rng, cfg.landmark_size), rng))
    rng.shuffle(corpus)
    rng.shuffle(image_corpus)

    if cfg.plant_faults and samples:
        # An exact duplicate (same question, same image) under another id, and an image that
        # cannot be decoded: curation must remove the first and quarantine the second.
        samples.append({**samples[0], "id": f"{samples[0]['id']}-dup"})
        broken = image_dir / "broken.png"
        broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        samples.append({**samples[-2], "id": "demo-broken-image", "images": [str(broken.relative_to(out))]})

    write_jsonl(out / "samples.jsonl", samples)
    write_jsonl(out / "corpus.jsonl", corpus)
    write_jsonl(out / "image_corpus.jsonl", image_corpus)
    questions: set[str] = set()
    write_jsonl(out / "long_cot.jsonl", [_long_cot(rng, i, questions) for i in range(cfg.long_cot)])
    write_jsonl(out / "replay_scripts.jsonl", scripts)
    summary = {
        "seed": cfg.seed,
        "samples": len(samples),
        "corpus_docs": len(corpus), "long_cot_rows": cfg.long_cot,
        **world_files(out),
    }
    (out / "world.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line, keys sorted (a world's files are the same bytes for the same seed)."""
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
