"""Label vocabularies shared by face sets and classifiers (FairFace's, the field's common currency).

Face sets label their inputs in these words and classifiers predict in them, so both import them
from here rather than from each other (see ARCHITECTURE.md).
"""

RACE7 = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")
RACE4 = ("White", "Black", "Asian", "Indian")
RACE7_TO_RACE4 = {"White": "White", "Black": "Black", "East Asian": "Asian", "Southeast Asian": "Asian",
                  "Indian": "Indian", "Latino_Hispanic": "", "Middle Eastern": ""}
GENDERS = ("Male", "Female")
AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
AGE_BIN_LOWER = (0, 3, 10, 20, 30, 40, 50, 60, 70)  # years; each bin runs up to the next one's lower edge
AGE_YEARS = (0.0, 116.0)
"""Years an age reading can take: UTKFace's labels span 0–116 (Zhang, Song & Qi 2017; datasets/utkface/README.md),
and every registered classifier's ``age_years`` lies inside it (age-gender: 0.25–80, its 81 classes; deepface:
0–100, its 101 one-year classes; GEAR: 15–65, its bin centres). A change of age between two readings is therefore
within ±116 years."""
