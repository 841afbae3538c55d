"""The paper's claims, enumerated once: what "Flatness is a False Friend" asserts, section by section,
each as a composite ("A AND B") of components that the chapters test and tag with
``claims.Claim.paper_claim`` / ``component``.

A chapter's primary claims are the components of the paper claims it tests (the ``chapters`` of a
``PaperClaim``); everything else it decides is secondary (Holm-corrected within the chapter), a
correction of the paper, or the book's own check. The scoreboard (``flatbook.book.scoreboard``) has
one row per (paper claim, chapter): the conjunction of that chapter's components, their effects with
intervals, and the regime they were measured in. A test checks that every executed chapter tags
exactly the components listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaperClaim", "PAPER_CLAIMS", "GEDANKEN", "THEOREM1", "WEIGHT_DECAY", "GADAM", "BN_EVAL", "paper_claim",
           "claims_of_chapter", "tag"]


@dataclass(frozen=True)
class PaperClaim:
    """One claim of the paper: ``name`` (the id chapters tag), where the paper makes it, the claim in
    the paper's terms, its ``components`` (each a claim a chapter decides; the composite holds when
    every component does), and the chapters that test it."""

    name: str
    section: str
    statement: str
    components: tuple[str, ...]
    chapters: tuple[str, ...]


GEDANKEN = PaperClaim(
    "Section 2: along rays that lower the loss, the Hessian vanishes", "Section 2",
    "for the deep linear model with exponential loss, the Hessian (its trace and spectral norm) is a polynomial "
    "in the weights times the loss, so it vanishes as the loss goes to 0; tested along rays w = t d (along an "
    "unbalanced path to zero loss it need not vanish: the chapter's correction)",
    ("Tr(H) and ||H||_F -> 0 along rays where the loss -> 0",), ("gedanken",))
THEOREM1 = PaperClaim(
    "Theorem 1, along scalings of the weights", "Section 3",
    "for a feed-forward ReLU network with softmax cross-entropy, as the training loss goes to 0 by scaling the "
    "weights, the Hessian's spectral norm, trace and Frobenius norm go to 0; tested exactly for logistic regression "
    "on separable data and a ReLU network on one activation piece (for an arbitrary path to zero loss the theorem "
    "is false: the Gedanken chapter's unbalanced path)",
    ("logistic regression: every Hessian entry -> 0", "ReLU network: both terms of the Hessian -> 0"),
    ("theorem1",))
WEIGHT_DECAY = PaperClaim(
    "weight decay: sharper and better", "Section 4",
    "weight decay gives a solution that is SHARPER (larger lambda_1) and generalises BETTER (higher validation "
    "accuracy) than no weight decay",
    ("sharper: lambda_1 larger", "better: validation accuracy higher"),
    ("wd_logreg", "wd_mlp", "wd_allcnnc", "wd_preresnet", "wd_wrn"))
GADAM = PaperClaim(
    "Gadam: sharper and better", "Section 5",
    "Adam with decoupled weight decay and iterate averaging (Gadam) finds a solution that is SHARPER (about 40x "
    "larger lambda_1) and generalises BETTER than SGD's",
    ("sharper: lambda_1 larger", "better: validation accuracy higher"), ("adaptive",))
BN_EVAL = PaperClaim(
    "BatchNorm eval mode: the regularised solution is sharper", "Appendix C",
    "with BatchNorm in evaluation mode the regularised solution is much sharper (lambda_1 about 1000x, the "
    "Frobenius norm O(10^7) larger) than the unregularised one",
    ("eval mode: lambda_1 larger with weight decay",), ("bn_modes",))

PAPER_CLAIMS: tuple[PaperClaim, ...] = (GEDANKEN, THEOREM1, WEIGHT_DECAY, GADAM, BN_EVAL)


def paper_claim(name: str) -> PaperClaim:
    """The enumerated paper claim called ``name`` (ValueError naming the known ones otherwise)."""
    for p in PAPER_CLAIMS:
        if p.name == name:
            return p
    raise ValueError(f"no paper claim {name!r}; the paper's claims are: {[p.name for p in PAPER_CLAIMS]}")


def claims_of_chapter(chapter: str) -> list[PaperClaim]:
    """The paper claims that ``chapter`` (a notebook stem) tests, in the paper's order."""
    return [p for p in PAPER_CLAIMS if chapter in p.chapters]


def tag(claim: PaperClaim, component: str) -> dict[str, str]:
    """The keyword arguments that make a claim a component of ``claim``: ``role="paper"``, its
    ``paper_claim`` and ``component`` (ValueError if ``component`` is not one of its components)."""
    if component not in claim.components:
        raise ValueError(f"{component!r} is not a component of {claim.name!r}; its components: {claim.components}")
    return {"role": "paper", "paper_claim": claim.name, "component": component}
