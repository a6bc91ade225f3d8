"""A tiny retrieval corpus: each query has exactly one document that answers it."""

from __future__ import annotations

DOCUMENTS = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
    "Share prices fell sharply after the central bank raised interest rates again.",
    "To bake sourdough bread you need flour, water, salt and an active starter.",
    "The goalkeeper saved a penalty in the last minute and his team won the football match.",
]

QUERIES = {
    "Which famous landmark stands in Paris?": 0,
    "How do plants make food from light?": 1,
    "What happened to stocks when borrowing costs went up?": 2,
    "What ingredients does a sourdough loaf need?": 3,
    "Who stopped the penalty kick in the soccer game?": 4,
}
