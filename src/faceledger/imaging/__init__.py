from faceledger.imaging.budget import DecodeBudget, configure_decode_budget, decode_budget
from faceledger.imaging.decode import Decoded, ImageInput, decode_at_least, decode_base64, decode_image

__all__ = ["DecodeBudget", "Decoded", "ImageInput", "configure_decode_budget", "decode_at_least", "decode_base64",
           "decode_budget", "decode_image"]
