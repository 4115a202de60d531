"""Marker-set names shared by perception (which produces markers) and the model (which carries
them). The model's BlazePose marker set uses the landmark names below as marker names."""

# MediaPipe BlazePose landmark order (index = landmark id).
BLAZEPOSE33 = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)

# The 43 OpenCap (LaiUhlrich2022) marker names, as produced from a body mesh.
OPENCAP43 = (
    "C7_study", "r_shoulder_study", "L_shoulder_study", "r.ASIS_study", "L.ASIS_study",
    "r.PSIS_study", "L.PSIS_study", "r_knee_study", "r_mknee_study", "r_ankle_study",
    "r_mankle_study", "r_toe_study", "r_5meta_study", "r_calc_study", "L_knee_study",
    "L_mknee_study", "L_ankle_study", "L_mankle_study", "L_toe_study", "L_calc_study",
    "L_5meta_study", "r_lelbow_study", "L_lelbow_study", "r_melbow_study", "L_melbow_study",
    "r_lwrist_study", "L_lwrist_study", "r_mwrist_study", "L_mwrist_study",
    "r_thigh1_study", "r_thigh2_study", "r_thigh3_study", "L_thigh1_study", "L_thigh2_study",
    "L_thigh3_study", "r_sh1_study", "r_sh2_study", "r_sh3_study", "L_sh1_study",
    "L_sh2_study", "L_sh3_study", "RHJC_study", "LHJC_study",
)

MARKER_SETS = {"blazepose33": BLAZEPOSE33, "opencap43": OPENCAP43}
