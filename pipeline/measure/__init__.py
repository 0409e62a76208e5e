"""Scene measurements on RGB numpy frames: motion, shot cuts, light, colour, faces and people.

Apart from any backend, so the offline narrator words them and anything else watching the picture
can test them ("is there a person", "how much moves on the left"). Positions and regions are
fractions of the picture, so they mean the same at any resolution.
"""
