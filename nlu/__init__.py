"""Chinese NLU pieces for Linli: normalisation, safety rules, entity rules, Rasa components."""
