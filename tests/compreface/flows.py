"""CompreFace's own Python SDK (compreface-sdk 0.6.0) driving a server: the recognition, detection and
verification flows of its README. Runs in the SDK's own virtual environment (it needs urllib3<2, which faceledger
does not pin), so it imports nothing of faceledger: it prints every answer as JSON for the test to check.

    python flows.py '<json: domain, port, keys, images>'
"""

import json
import sys

from compreface import CompreFace

cfg = json.loads(sys.argv[1])
img = cfg["images"]
out = {}
cf = CompreFace(cfg["domain"], cfg["port"], {"limit": 0, "det_prob_threshold": 0.5, "prediction_count": 2,
                                              "face_plugins": "landmarks", "status": "true"})
recognition = cf.init_face_recognition(cfg["recognition_key"])
faces, subjects = recognition.get_face_collection(), recognition.get_subjects()

out["add_subject"] = subjects.add("Amy Farrah Fowler")
out["add_subject_again"] = subjects.add("Amy Farrah Fowler")
out["add_amy1"] = faces.add(img["amy1"], "Amy Farrah Fowler")
out["add_amy2"] = faces.add(img["amy2"], "Amy Farrah Fowler")
out["add_sheldon"] = faces.add(img["sheldon1"], "Sheldon")
out["add_group"] = faces.add(img["group"], "Everyone")
out["add_blank"] = faces.add(img["blank"], "Nobody")
out["list_faces"] = faces.list()
out["subjects"] = subjects.list()
out["recognize_amy"] = recognition.recognize(img["amy3"])
out["recognize_blank"] = recognition.recognize(img["blank"])
out["recognize_plugins"] = recognition.recognize(img["amy3"], {"face_plugins": "age,gender"})
out["verify_face"] = faces.verify(img["amy4"], out["add_amy1"]["image_id"])
out["rename"] = subjects.update("Sheldon", "Sheldon Cooper")
out["rename_missing"] = subjects.update("Penny", "Penny Hofstadter")
out["subjects_renamed"] = subjects.list()

detection = cf.init_face_detection(cfg["detection_key"])
out["detect"] = detection.detect(img["group"])
out["detect_blank"] = detection.detect(img["blank"])
verification = cf.init_face_verification(cfg["verification_key"])
out["verify_same"] = verification.verify(img["amy1"], img["amy3"])
out["verify_other"] = verification.verify(img["amy1"], img["sheldon1"])
out["verify_group_source"] = verification.verify(img["group"], img["amy3"])

out["delete_one"] = faces.delete(out["add_amy2"]["image_id"])
out["delete_missing"] = faces.delete("00000000-0000-4000-8000-000000000000")
out["delete_all_of"] = faces.delete_all("Sheldon Cooper")
out["delete_subject"] = subjects.delete("Amy Farrah Fowler")
out["delete_subject_missing"] = subjects.delete("Amy Farrah Fowler")
out["subjects_after"] = subjects.list()
out["faces_after"] = faces.list()
out["recognize_after"] = recognition.recognize(img["amy3"])
print(json.dumps(out))
