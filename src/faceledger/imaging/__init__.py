from faceledger.imaging.budget import DecodeBudget, configure_decode_budget, decode_budget
from faceledger.imaging.decode import ImageInput, decode_base64, decode_image

__all__ = ["DecodeBudget", "ImageInput", "configure_decode_budget", "decode_base64", "decode_budget", "decode_image"]
