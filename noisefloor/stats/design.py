"""Two-level fractional-factorial designs: which combinations of k on/off interventions to run.

A regular 2^(k-p) design runs 2^(k-p) of the 2^k combinations: the first
k-p factors take every on/off combination, each of the other p factors is
switched on when an odd number of its generator's factors are on (in the ±1
coding its column is ± the product of the generator's columns). The generators are the standard
minimum-aberration ones (Box, Hunter & Hunter, Statistics for Experimenters,
2nd ed., table 6.22); a test checks each against every other choice.

Choosing the generator signs this way (each defining word's product even in
0/1 terms) keeps the all-off row, the baseline, in the design: the rows are a
linear subspace of GF(2)^k. Effects are sets of factors (a word); two effects
are aliased when their symmetric difference is a defining word, i.e. their
±1 columns are equal over the design's rows. Resolution = length of the
shortest defining word: III aliases main effects with two-factor interactions,
IV two-factor interactions with each other, V and above keeps all main
effects and two-factor interactions apart.

Init seeds replicate the whole design (one block per init seed), so the seed
is a block factor orthogonal to every effect: never aliased with one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from itertools import combinations, product

import numpy as np

from noisefloor.errors import UserError

LETTERS = "ABCDEFG"
MIN_FACTORS, MAX_FACTORS = 2, len(LETTERS)

# (factors, runs) -> generators of the added factors, as words in the basic factors' letters
GENERATORS: dict[tuple[int, int], tuple[str, ...]] = {
    (3, 4): ("AB",),
    (4, 8): ("ABC",),
    (5, 8): ("AB", "AC"),
    (5, 16): ("ABCD",),
    (6, 8): ("AB", "AC", "BC"),
    (6, 16): ("ABC", "BCD"),
    (6, 32): ("ABCDE",),
    (7, 8): ("AB", "AC", "BC", "ABC"),
    (7, 16): ("ABC", "BCD", "ACD"),
    (7, 32): ("ABCD", "ABDE"),
    (7, 64): ("ABCDEF",),
}
FULL = 99  # resolution of a full factorial: no defining word
ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII"}

Effect = frozenset[int]  # factor indices; one index = a main effect, two = a two-factor interaction


@dataclass(frozen=True)
class Design:
    factors: tuple[str, ...]  # intervention names, in the order the letters A, B, ... are given to them
    generators: tuple[str, ...]  # e.g. ("E=ABCD",)
    words: tuple[Effect, ...]  # the defining relation's words (without I), shortest first

    @property
    def k(self) -> int:
        return len(self.factors)

    @property
    def p(self) -> int:
        return len(self.generators)

    @property
    def runs(self) -> int:
        return 2 ** (self.k - self.p)

    @property
    def full_runs(self) -> int:
        return 2**self.k

    @property
    def resolution(self) -> int:
        return min((len(w) for w in self.words), default=FULL)

    @property
    def resolution_name(self) -> str:
        return "full factorial" if self.resolution == FULL else f"resolution {ROMAN.get(self.resolution, self.resolution)}"

    @property
    def defining_relation(self) -> str:
        return "I = " + " = ".join(letters(w) for w in self.words) if self.words else "none (full factorial)"

    def matrix(self) -> np.ndarray:
        """runs x k array of 0/1 (1 = intervention on), standard order; row 0 is all off."""
        base = self.k - self.p
        rows = np.array(list(product((0, 1), repeat=base)), dtype=int)[:, ::-1]  # A changes fastest
        added = [np.bitwise_xor.reduce(rows[:, [LETTERS.index(c) for c in g.split("=")[1]]], axis=1) for g in self.generators]
        return np.column_stack([rows] + added) if added else rows

    def rows(self) -> list[str]:
        """The design's rows as intervention names: 'baseline' or 'a+b+...'."""
        return [row_name(self.factors, on) for on in self.matrix()]

    def aliases(self, effect: Effect, max_order: int = 2) -> list[Effect]:
        """Effects of at most max_order factors whose columns equal this effect's over the design."""
        found = {frozenset(effect ^ w) for w in self.words}
        return sorted((e for e in found if 0 < len(e) <= max_order), key=lambda e: (len(e), sorted(e)))

    def alias_chains(self) -> list[tuple[Effect, list[Effect]]]:
        """Each main effect and two-factor interaction with the ones it is aliased with (each chain once)."""
        chains, seen = [], set()
        for effect in low_order_effects(self.k):
            if effect in seen:
                continue
            aliased = self.aliases(effect)
            seen.update(aliased)
            chains.append((effect, aliased))
        return chains

    def name(self, effect: Effect) -> str:
        return effect_name(self.factors, effect)


def letters(word: Effect) -> str:
    return "".join(LETTERS[i] for i in sorted(word))


def effect_name(factors: tuple[str, ...], effect: Effect) -> str:
    return " x ".join(factors[i] for i in sorted(effect))


def row_name(factors: tuple[str, ...], on) -> str:
    names = [f for f, x in zip(factors, on) if x]
    return "+".join(names) if names else "baseline"


def low_order_effects(k: int) -> list[Effect]:
    """Main effects, then two-factor interactions."""
    return [frozenset((i,)) for i in range(k)] + [frozenset(pair) for pair in combinations(range(k), 2)]


def defining_words(generators: tuple[str, ...]) -> tuple[Effect, ...]:
    """Every product of the generator words (X=ABC gives the word ABCX), shortest first."""
    gen_words = [frozenset(LETTERS.index(c) for c in g.replace("=", "")) for g in generators]
    words = set()
    for r in range(1, len(gen_words) + 1):
        for chosen in combinations(gen_words, r):
            words.add(reduce(lambda a, b: a ^ b, chosen))
    return tuple(sorted(words, key=lambda w: (len(w), sorted(w))))


def regular(factors: tuple[str, ...], runs: int) -> Design:
    """The minimum-aberration regular design of len(factors) factors in `runs` runs (2^k runs: full factorial)."""
    k = len(factors)
    if runs == 2**k:
        generators: tuple[str, ...] = ()
    else:
        base = LETTERS[k - len(GENERATORS[(k, runs)]):]
        generators = tuple(f"{added}={word}" for added, word in zip(base, GENERATORS[(k, runs)]))
    return Design(tuple(factors), generators, defining_words(generators))


def choose(factors: list[str], runs: int | None = None, resolution: int | None = None) -> Design:
    """The smallest regular design with at least `runs` runs and at least `resolution` (default: III with
    --runs, else V; the full factorial when fewer factors leave no such design short of it)."""
    k = len(factors)
    combined = [f for f in factors if "+" in f or f == "baseline"]
    if combined:
        raise UserError(f"--interventions lists {combined[0]!r}: give single interventions (e.g. grad-clip,no-dropout); "
                        "the design makes the combinations and the baseline")
    if len(set(factors)) != k:
        raise UserError(f"an intervention is listed twice: {','.join(factors)}")
    if not MIN_FACTORS <= k <= MAX_FACTORS:
        raise UserError(f"a two-level design needs {MIN_FACTORS} to {MAX_FACTORS} interventions, got {k}; "
                        "e.g. --interventions grad-clip,no-dropout,wd-0.01")
    wanted = resolution if resolution is not None else 3 if runs is not None else 5
    if runs is not None and runs > 2**k:
        raise UserError(f"--runs {runs} is more than the full factorial of {k} interventions ({2**k} runs); "
                        f"use --runs {2**k} or fewer (replicate with more --init-seeds)")
    sizes = sorted([r for kk, r in GENERATORS if kk == k] + [2**k])
    for size in sizes:
        design = regular(tuple(factors), size)
        if size >= (runs or 0) and design.resolution >= min(wanted, FULL):
            return design
    raise UserError(f"no regular design of {k} interventions reaches resolution {ROMAN.get(wanted, wanted)}; "
                    f"the full factorial ({2**k} runs) is the most there is")


def recognise(factors: tuple[str, ...], matrix: np.ndarray) -> Design | None:
    """The regular design whose rows are exactly the distinct 0/1 rows of `matrix`, or None: the rows must hold
    the all-off row and be closed under XOR (a linear subspace of GF(2)^k) of size 2^(k-p) >= k+1."""
    rows = {tuple(int(x) for x in r) for r in matrix}
    k = len(factors)
    if not MIN_FACTORS <= k <= MAX_FACTORS or len(rows) < k + 1 or len(rows) & (len(rows) - 1):
        return None
    if tuple([0] * k) not in rows or any(tuple(a ^ b for a, b in zip(r, s)) not in rows for r in rows for s in rows):
        return None
    words = []
    for mask in range(1, 2**k):
        word = frozenset(i for i in range(k) if mask >> i & 1)
        if all(sum(r[i] for i in word) % 2 == 0 for r in rows):
            words.append(word)
    words.sort(key=lambda w: (len(w), sorted(w)))
    p = int(np.log2(2**k // len(rows)))
    return Design(tuple(factors), tuple(f"word {letters(w)}" for w in _basis(words, p)), tuple(words))


def _basis(words: list[Effect], p: int) -> list[Effect]:
    """p independent words generating the defining relation (shortest first)."""
    basis: list[Effect] = []
    span = {frozenset()}
    for w in words:
        if w not in span:
            basis.append(w)
            span |= {s ^ w for s in span}
        if len(basis) == p:
            break
    return basis
