"""How angry an inbound support message is, English and Chinese.

- ``lexicon``: a fixed rule over published lexicons (VADER, HowNet / DUTIR) and the signals people use;
- ``model``: an online River model that learns from agents' feedback on escalations, blended with the rule.
"""
