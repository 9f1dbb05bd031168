from faceledger.imaging.decode import ImageInput, decode_base64, decode_image

__all__ = ["ImageInput", "decode_base64", "decode_image"]
