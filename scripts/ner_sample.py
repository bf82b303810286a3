"""Generate raynlp's own small English NER sample (IOB2 tags PER, ORG, LOC, MISC).

No corpus text is used: sentences come from the templates below, filled (with a seeded random
generator) from entity lists written for this sample. About 30% of the names of every entity list
are held out: they appear only in the validation sentences, so validation scores also measure
entities the model has not seen in training.

    from ner_sample import make_ner_sentences
    train, validation = make_ner_sentences(500, 120, seed=0)

Each sentence is a list of ``(token, tag)`` pairs; punctuation marks are tokens of their own.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

# --- entity lists (invented people, companies, clubs; real places, nationalities, languages) ---
# fmt: off

PEOPLE = [
    "Anna Lindqvist", "Marco Bellandi", "Tomasz Wierzbicki", "Grace Okonkwo", "Hiroshi Tanabe",
    "Elena Vasquez", "Pieter van Dalen", "Fatima Benali", "Lucas Moreau", "Ingrid Halvorsen",
    "Rahul Menon", "Sofia Karalis", "David Ashworth", "Mei Lin Zhou", "Kwame Asante",
    "Olga Petrenko", "James Whitcombe", "Carmen Ibarra", "Nikolai Sorokin", "Amira Haddad",
    "Brendan Fallon", "Yuki Morimoto", "Helena Brandt", "Samuel Adeyemi", "Lars Eriksen",
    "Isabel Cardoso", "Viktor Horvath", "Priya Raman", "Thomas Kessler", "Chloe Durand",
    "Mateo Rossi", "Nadia Kowalczyk", "Omar Farouk", "Rachel Stein", "Diego Fuentes",
    "Emma Thornton", "Jonas Lindberg", "Aisha Mwangi", "Paul Renard", "Katarina Novak",
    "Felipe Araujo", "Hannah Becker", "Sergei Volkov", "Laura Castellano", "Michael Doyle",
    "Ayumi Kato", "Stefan Marinescu", "Zainab Yusuf", "Oliver Pemberton", "Clara Weiss",
    "Andrei Popescu", "Lucia Moretti", "Henrik Dahl", "Nomvula Dlamini", "Patrick Gallagher",
    "Irene Papadakis", "Tariq Mahmood", "Julia Sandoval", "Erik Johansson", "Min-jun Park",
    "Teresa Almeida", "Robert Lang", "Simone Ferrari", "Kenji Watanabe", "Beatrix Kovacs",
    "Alan Mercer", "Rosa Delgado", "Johan Visser", "Leila Nasser", "Gordon McAllister",
]

COMPANIES = [
    "Northwind Energy", "Kestrel Airlines", "Halvorsen Shipping", "Bluecrest Bank",
    "Orbis Telecom", "Meridian Motors", "Silverline Rail", "Copperfield Mining", "Valemont Foods",
    "Asterion Pharma", "Greystone Insurance", "Pinnacle Steel", "Harbourview Capital",
    "Lumen Software", "Redwater Chemicals", "Castellan Group", "Falconridge Media",
    "Tidewater Oil", "Helix Biotech", "Brightmoor Retail", "Norland Paper", "Arcadia Hotels",
    "Summit Cement", "Westgate Securities", "Solace Electronics", "Ironbridge Construction",
    "Crestline Logistics", "Evergreen Textiles", "Marlow Breweries", "Quayside Holdings",
    "Atlas Aerospace", "Riverton Utilities",
]

CLUBS = [
    "Ashford United", "Rovers Kingsbridge", "Sporting Valmora", "Dynamo Kirovsk",
    "Real Castellon", "Atletico Miramar", "Union Brackwell", "Olympia Thessia",
    "Hartley Athletic", "Borussia Lindenau", "Calder Town", "Racing Montval",
    "Fenwick Wanderers", "Inter Saletta", "Partizan Drava", "Aldwick City", "Rapid Ostrava",
    "Stella Rossa", "Harrowgate Rangers", "Vitoria Alcoba", "Corinth Albion",
    "Eastfield Rovers",
]

BODIES = [
    "United Nations", "European Union", "World Bank", "International Monetary Fund",
    "Red Cross", "World Health Organisation", "African Union", "World Trade Organisation",
    "Arab League", "NATO", "OPEC", "International Olympic Committee", "Council of Europe",
    "Amnesty International",
]

PARTIES = [
    "Liberal Democratic Party", "Social Democrats", "Green Party", "Labour Party",
    "Christian Democrats", "Progress Party", "Centre Party", "Reform Movement", "Workers Party",
    "Agrarian Party", "Civic Alliance", "Democratic Union",
]

AGENCIES = [
    "National Statistics Office", "Supreme Court", "Interior Ministry", "Finance Ministry",
    "Transport Ministry", "Football Association", "Chamber of Commerce", "Union of Dock Workers",
    "Meteorological Office", "Coast Guard", "Geological Survey", "Foreign Ministry",
]

CITIES = [
    "London", "Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Warsaw",
    "Stockholm", "Oslo", "Helsinki", "Copenhagen", "Dublin", "Brussels", "Amsterdam", "Athens",
    "Istanbul", "Cairo", "Nairobi", "Lagos", "Johannesburg", "Tokyo", "Osaka", "Seoul",
    "Beijing", "Shanghai", "Mumbai", "New Delhi", "Jakarta", "Manila", "Sydney", "Melbourne",
    "Auckland", "Toronto", "Montreal", "New York", "Chicago", "Los Angeles", "Mexico City",
    "Buenos Aires", "Sao Paulo", "Lima", "Santiago", "Bogota", "Hong Kong", "Singapore",
    "Frankfurt", "Milan", "Geneva", "Rio de Janeiro", "Kuala Lumpur",
]

COUNTRIES = [
    "Britain", "France", "Germany", "Spain", "Italy", "Portugal", "Austria", "Poland", "Sweden",
    "Norway", "Finland", "Denmark", "Ireland", "Belgium", "Greece", "Turkey", "Egypt", "Kenya",
    "Nigeria", "South Africa", "Japan", "South Korea", "China", "India", "Indonesia",
    "Australia", "New Zealand", "Canada", "Mexico", "Brazil", "Argentina", "Chile", "Peru",
    "Colombia", "Morocco", "Vietnam", "Thailand", "Hungary", "Romania", "Czech Republic",
    "United States", "Saudi Arabia",
]

REGIONS = [
    "Europe", "Asia", "Africa", "Latin America", "the Middle East", "Scandinavia",
    "the Balkans", "North America", "Southeast Asia", "the Pacific", "the Mediterranean",
    "the Baltic", "Central Asia", "the Gulf",
]

NATIONALITIES = [
    "British", "French", "German", "Spanish", "Italian", "Portuguese", "Austrian", "Polish",
    "Swedish", "Norwegian", "Finnish", "Danish", "Irish", "Belgian", "Greek", "Turkish",
    "Egyptian", "Kenyan", "Nigerian", "South African", "Japanese", "Korean", "Chinese",
    "Indian", "Australian", "Canadian", "Mexican", "Brazilian", "Argentine", "Chilean",
    "Dutch", "Swiss", "Hungarian", "Romanian", "Moroccan", "Vietnamese",
]

EVENTS = [
    "World Cup", "Olympic Games", "European Championship", "Davis Cup", "Champions League",
    "Asian Games", "Commonwealth Games", "Six Nations", "African Cup of Nations",
    "Winter Olympics", "Copa America", "Gold Cup", "World Athletics Championships",
]

FAIRS = [
    "World Economic Forum", "Venice Film Festival", "Paris Air Show", "Frankfurt Book Fair",
    "Geneva Motor Show", "Cannes Film Festival", "Mobile World Congress", "Edinburgh Festival",
    "Hanover Trade Fair", "Climate Summit",
]

AWARDS = [
    "Nobel Prize in Literature", "Booker Prize", "Pulitzer Prize", "Goncourt Prize",
    "Strega Prize", "Miles Franklin Award", "Giller Prize", "Cervantes Prize",
]

LANGUAGES = [
    "English", "French", "German", "Spanish", "Portuguese", "Arabic", "Mandarin", "Hindi",
    "Swahili", "Japanese", "Russian", "Italian", "Korean", "Dutch", "Turkish", "Polish",
]

# The entity types of the slots and the tag they get.
POOLS: dict[str, tuple[list[str], str]] = {
    "PER": (PEOPLE, "PER"),
    "COMPANY": (COMPANIES, "ORG"),
    "CLUB": (CLUBS, "ORG"),
    "BODY": (BODIES, "ORG"),
    "PARTY": (PARTIES, "ORG"),
    "AGENCY": (AGENCIES, "ORG"),
    "CITY": (CITIES, "LOC"),
    "COUNTRY": (COUNTRIES, "LOC"),
    "REGION": (REGIONS, "LOC"),
    "NAT": (NATIONALITIES, "MISC"),
    "EVENT": (EVENTS, "MISC"),
    "FAIR": (FAIRS, "MISC"),
    "AWARD": (AWARDS, "MISC"),
    "LANG": (LANGUAGES, "MISC"),
}

# --- templates --------------------------------------------------------------------------------
# {TYPE} or {TYPE2} (a second, different entity of the type) is an entity; {SUR}/{SUR2} is the
# surname of {PER}/{PER2}. Lower-case slots are plain words (numbers, days, ...), tagged O.
# Words that are not in a slot are never entity names (a leading "the" of a region is O).

TEMPLATES = [
    # sports results
    "{CLUB} beat {CLUB2} {goals} - {goals2} on {day} to go top of the table .",
    "{CLUB} and {CLUB2} drew {goals} - {goals} in {CITY} on {day} .",
    "{SUR} scored twice as {CLUB} won {goals} - {goals2} away at {CLUB2} .",
    "{NAT} striker {PER} signed a {years} - year contract with {CLUB} .",
    "{PER} of {COUNTRY} won the 400 metres in {time} seconds .",
    "{COUNTRY} reached the semi-finals of the {EVENT} after beating {COUNTRY2} {goals} - {goals2} .",
    "{PER} ( {COUNTRY} ) beat {PER2} ( {COUNTRY2} ) {set} {set2} in the second round .",
    "{CLUB} coach {PER} was sacked on {day} after {number} defeats in a row .",
    "The {EVENT} will be held in {CITY} in {month} next year , organisers said .",
    "{SUR} , who missed the {EVENT} through injury , returns for {CLUB} on {day} .",
    "{NAT} cyclist {PER} took the leader 's jersey after the {ordinal} stage .",
    "Result of the {EVENT} match played in {CITY} on {day} : {COUNTRY} {goals} {COUNTRY2} {goals2} .",
    "{PER} carded a {score} to lead by {number} shots after the first round in {CITY} .",
    # politics
    "{NAT} Prime Minister {PER} arrived in {CITY} on {day} for talks with {PER2} .",
    "The {BODY} said on {day} it would send {number} observers to {COUNTRY} .",
    "{PER} , leader of the {PARTY} , called for early elections in {month} .",
    "Foreign ministers of the {BODY} met in {CITY} to discuss the crisis in {REGION} .",
    "{COUNTRY} and {COUNTRY2} signed a trade agreement in {CITY} on {day} .",
    "Police in {CITY} arrested {number} people after protests against the {AGENCY} .",
    "{SUR} told parliament the {PARTY} would not raise taxes this year .",
    "The {NAT} government expelled {number} diplomats , the {AGENCY} said .",
    "{PER} was elected mayor of {CITY} with {pct} percent of the vote .",
    "Voters in {COUNTRY} go to the polls on {day} in a referendum on the constitution .",
    "{PER} , a spokesman for the {BODY} , said talks with {COUNTRY} had broken down .",
    "Refugees from {REGION} continued to arrive in {COUNTRY} , the {BODY} said on {day} .",
    # business
    "{COMPANY} shares rose {pct} percent in {CITY} after the company raised its forecast .",
    "{COMPANY} said on {day} it would buy {COMPANY2} for {money} million dollars .",
    "{COMPANY} chief executive {PER} said sales in {REGION} fell {pct} percent .",
    "{COMPANY} will cut {number} jobs at its plant in {CITY} , a spokeswoman said .",
    "The {NAT} central bank kept interest rates unchanged at {pct} percent on {day} .",
    "{NAT} carmaker {COMPANY} reported a net profit of {money} million euros .",
    "{COMPANY} opened a new factory near {CITY} , its first in {COUNTRY} .",
    "Inflation in {COUNTRY} rose to {pct} percent in {month} , the {AGENCY} said .",
    "{PER} will step down as chairman of {COMPANY} in {month} , the board said .",
    "{COMPANY} and {COMPANY2} agreed to merge their operations in {REGION} .",
    "{COMPANY} unveiled its new model at the {FAIR} in {CITY} on {day} .",
    "More than {number} companies from {COUNTRY} will attend the {FAIR} , {PER} said .",
    "Trading in {COMPANY} was suspended in {CITY} on {day} pending an announcement .",
    # travel and general news
    "{COMPANY} will start daily flights from {CITY} to {CITY2} in {month} .",
    "Heavy snow closed the airport in {CITY} on {day} , stranding {number} passengers .",
    "Tourist arrivals in {COUNTRY} rose {pct} percent last year , led by {NAT} visitors .",
    "A train from {CITY} to {CITY2} was delayed for {number} hours by a strike .",
    "The museum in {CITY} now offers tours in {LANG} , {LANG2} and {LANG3} .",
    "An earthquake of magnitude {magnitude} struck {COUNTRY} on {day} , the {AGENCY} said .",
    "{PER} won the {AWARD} for a novel written in {LANG} .",
    "Schools in {COUNTRY} will teach {LANG} from the age of {age} , the minister said .",
    "Floods in {REGION} forced {number} people from their homes , the {BODY} said .",
    "A ferry carrying {number} passengers sank off the coast of {COUNTRY} on {day} .",
    # quotes
    '" We are very happy with the result , " said {PER} , the {CLUB} captain .',
    '" The economy of {COUNTRY} will recover next year , " {SUR} told reporters in {CITY} .',
    '" This is a good day for {REGION} , " the {NAT} president said on {day} .',
    '" We will not leave {CITY} , " {PER} of the {PARTY} said .',
    '" Prices will keep rising , " said {PER} , an analyst at {COMPANY} in {CITY} .',
    '{SUR} said : " I want to play at the {EVENT} for {COUNTRY} . "',
    '" Our talks with {COMPANY} went well , " {PER} said in {LANG} .',
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
# fmt: on


def _word(kind: str, rng: random.Random) -> str:
    """A plain (O-tagged) slot value."""
    if kind == "day":
        return rng.choice(DAYS)
    if kind == "month":
        return rng.choice(MONTHS)
    if kind == "ordinal":
        return rng.choice(ORDINALS)
    if kind == "years":
        return rng.choice(["two", "three", "four", "five"])
    if kind == "number":
        return rng.choice(
            [
                "2",
                "3",
                "4",
                "5",
                "6",
                "8",
                "12",
                "15",
                "20",
                "30",
                "45",
                "60",
                "120",
                "250",
                "400",
                "1,200",
            ]
        )
    if kind == "pct":
        return f"{rng.randint(1, 60) / 10:.1f}"
    if kind == "money":
        return rng.choice(["45", "120", "310", "560", "800", "1,250", "2,400"])
    if kind == "time":
        return f"{rng.randint(4900, 5300) / 100:.2f}"
    if kind == "set":
        return rng.choice(["6-3", "6-4", "7-5", "6-2", "7-6", "4-6", "3-6"])
    if kind == "score":
        return rng.choice(["65", "66", "67", "68", "69"])
    if kind == "magnitude":
        return f"{rng.randint(45, 78) / 10:.1f}"
    if kind == "age":
        return str(rng.randint(6, 12))
    raise KeyError(kind)


_SLOT = re.compile(r"\{([A-Za-z]+?)(\d?)\}")


def _fill(template: str, pools: dict[str, list[str]], rng: random.Random) -> list[tuple[str, str]]:
    chosen: dict[tuple[str, str], str] = {}
    sentence: list[tuple[str, str]] = []

    def entity(kind: str, index: str) -> str:
        key = (kind, index)
        if key not in chosen:
            used = {v for (k, _), v in chosen.items() if k == kind}
            chosen[key] = rng.choice([name for name in pools[kind] if name not in used])
        return chosen[key]

    def word(kind: str, index: str) -> str:
        key = (kind, index)
        if key not in chosen:
            if kind == "goals":  # {goals} for the winner (or both, in a draw), {goals2} fewer
                chosen[key] = str(
                    rng.randint(1, 4) if not index else rng.randint(0, int(word("goals", "")) - 1)
                )
            else:
                chosen[key] = _word(kind, rng)
        return chosen[key]

    for token in template.split():
        match = _SLOT.fullmatch(token)
        if match is None:
            sentence.append((token, "O"))
            continue
        kind, index = match.groups()
        if kind == "SUR":
            sentence.append((entity("PER", index).split()[-1], "B-PER"))
        elif kind in POOLS:
            tag = POOLS[kind][1]
            words = entity(kind, index).split()
            if words[0] == "the":  # "the Balkans": the article is not part of the name
                sentence.append(("the", "O"))
                words = words[1:]
            sentence.extend(
                (word, ("B-" if i == 0 else "I-") + tag) for i, word in enumerate(words)
            )
        else:
            sentence.append((word(kind, index), "O"))
    # A capital letter at the start of the sentence.
    first, tag = sentence[0]
    sentence[0] = (first[:1].upper() + first[1:], tag)
    return sentence


def _hold_out(names: list[str], share: float, rng: random.Random) -> tuple[list[str], list[str]]:
    shuffled = sorted(names)
    rng.shuffle(shuffled)
    n_held = round(len(shuffled) * share)
    return sorted(shuffled[n_held:]), sorted(shuffled[:n_held])


def make_ner_sentences(
    n_train: int, n_validation: int, seed: int = 0, held_out_share: float = 0.3
) -> tuple[list[list[tuple[str, str]]], list[list[tuple[str, str]]]]:
    """Train and validation sentences; validation draws from all names, train from ~70%."""
    rng = random.Random(seed)
    train_pools: dict[str, list[str]] = {}
    all_pools: dict[str, list[str]] = {}
    for kind, (names, _) in POOLS.items():
        seen, held = _hold_out(names, held_out_share, rng)
        train_pools[kind] = seen
        all_pools[kind] = seen + held

    # Templates are used round-robin in a shuffled order so that every one appears.
    def sentences(n: int, pools: dict[str, list[str]]) -> list[list[tuple[str, str]]]:
        order: list[str] = []
        out = []
        while len(out) < n:
            if not order:
                order = list(TEMPLATES)
                rng.shuffle(order)
            out.append(_fill(order.pop(), pools, rng))
        return out

    return sentences(n_train, train_pools), sentences(n_validation, all_pools)


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    """``token TAG`` per line, a blank line after every sentence."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for sentence in sentences:
            handle.writelines(f"{token} {tag}\n" for token, tag in sentence)
            handle.write("\n")
