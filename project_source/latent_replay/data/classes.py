"""CORe50 facts: the 50 object names in label order and the session/category structure."""

#: The 50 CORe50 objects in label order (label = object number - 1; category = label // 5).
CORE50_CLASS_NAMES = (
    "plug_adapter1", "plug_adapter2", "plug_adapter3", "plug_adapter4", "plug_adapter5",
    "mobile_phone1", "mobile_phone2", "mobile_phone3", "mobile_phone4", "mobile_phone5",
    "scissor1", "scissor2", "scissor3", "scissor4", "scissor5",
    "light_bulb1", "light_bulb2", "light_bulb3", "light_bulb4", "light_bulb5",
    "can1", "can2", "can3", "can4", "can5",
    "glass1", "glass2", "glass3", "glass4", "glass5",
    "ball1", "ball2", "ball3", "ball4", "ball5",
    "marker1", "marker2", "marker3", "marker4", "marker5",
    "cup1", "cup2", "cup3", "cup4", "cup5",
    "remote_control1", "remote_control2", "remote_control3", "remote_control4", "remote_control5",
)

#: The 10 categories, five objects each, in label order.
CORE50_CATEGORIES = (
    "plug_adapter", "mobile_phone", "scissor", "light_bulb", "can",
    "glass", "ball", "marker", "cup", "remote_control",
)

NUM_CLASSES = 50
NUM_SESSIONS = 11
OBJECTS_PER_CATEGORY = 5
#: Sessions used for training in NICv2 (the others are the test sessions).
TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)
TEST_SESSIONS = (3, 7, 10)
#: Batch 0 of every NICv2 scenario: session 1 of one object per category.
FIRST_BATCH_SESSION = 1
FIRST_BATCH_OBJECTS = tuple(range(1, 51, 5))

LABELS_FILE = "core50_labels.txt"
IMAGES_DIR = "core50_128x128"


def category_of(label: int) -> int:
    """Category index (0..9) of an object label (0..49)."""
    return label // OBJECTS_PER_CATEGORY
