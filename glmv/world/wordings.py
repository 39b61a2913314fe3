"""The wordings of every question the world asks: N_WORDINGS templates per question, `str.format` slots.

Wording 0 is the one each task has always used (plain samples still ask exactly that). The others vary US/UK
spelling, length (terse to long), politeness and add an irrelevant sentence, so a model cannot key on one
phrasing. The last wording of each question is held out: only the `heldout` split asks it (glmv.world.style).
Every wording keeps what the answer format depends on (the JSON keys, "answer with its number", left/right).
"""

from __future__ import annotations

N_WORDINGS = 6
HELDOUT_WORDING = N_WORDINGS - 1

# Task-independent framing that varied training samples add around any wording (glmv.world.style): the same
# openers and closers go with every task and the place phrases swap for one another, so no filler word tells the
# model which task is asked. (The bundled-size model keyed on such words: after pretraining, "Could you please name
# the color of the circle shown here?" was answered with a count.) None of them is taken from a held-out wording,
# so the held-out split still asks phrasings no training sample has. The first of each is "no change".
OPENERS = ("", "Hi! ", "Quick question: ", "Look at the image. ", "I have a question about this picture. ",
           "Help me with this one. ", "Look closely. ", "Here is an image. ", "One more question. ",
           # the distractor sentences that single wordings carry, made task-independent here
           "I drew a few things for a puzzle book. ", "This image was made for a geometry class. ",
           "I am testing a drawing app. ", "This picture is from a children's book. ")
CLOSERS = ("", " Thanks!", " Be brief.", " Answer carefully.", " Keep it short.", " Take your time.", " Thank you.")
PLACES = ("", "in the image", "in this image", "in the picture", "in this picture")

WORDINGS: dict[str, tuple[str, ...]] = {
    # --- scenes -------------------------------------------------------------------------------------------------
    "color": (
        "What colour is the {shape}?",
        "What color is the {shape}?",
        "Tell me the colour of the {shape} in this image. Answer with one word.",
        "Colour of the {shape}?",
        "I drew a few things for a puzzle book. Which color is the {shape}?",
        "Could you please name the color of the {shape} shown here?",
    ),
    "shape": (
        "What shape is in the image?",
        "Which shape do you see?",
        "Please look at the picture and tell me what kind of shape is drawn in it.",
        "Name the shape.",
        "This image was made for a geometry class. What shape does it show?",
        "Identify the figure in this picture by its shape, please.",
    ),
    "count": (
        "How many objects are there?",
        "Count the objects in the image.",
        "How many shapes can you see in this picture? Please give the number.",
        "Number of objects?",
        "I am testing a drawing app. How many objects are in the picture?",
        "What is the total number of objects shown here?",
    ),
    "ground": (
        "Help me to locate the {object} in the image and give me its bounding boxes.",
        "Where is the {object}? Give its bounding box.",
        "Please find the {object} in this picture and answer with its bounding box.",
        "Bounding box of the {object}?",
        "There may be several shapes here. Give the bounding box of the {object}.",
        "Draw a box around the {object}: what are its coordinates?",
    ),
    "point": (
        "Point to the {object}.",
        "Where is the {object}? Answer with a point.",
        "Please give the coordinates of one point that lies on the {object}.",
        "Point at the {object}.",
        "Some shapes are drawn on a page. Point to the {object}.",
        "Which spot marks the {object}? Reply with its x and y.",
    ),
    "caption": (
        "Describe the image.",
        "What is in this picture?",
        "Please write a one-sentence caption that names every shape and its colour.",
        "Caption this.",
        "This picture is from a children's book. Describe it.",
        "Give a short description of what the image shows.",
    ),
    "relation": (
        "Is the {a} to the left or to the right of the {b}?",
        "Is the {a} left or right of the {b}?",
        "Looking at the image, is the {a} on the left side or the right side of the {b}?",
        "The {a}: left or right of the {b}?",
        "There are two shapes in this picture. Is the {a} to the left or to the right of the {b}?",
        "Relative to the {b}, which side is the {a} on, left or right?",
    ),
    # --- scenes (rich) ------------------------------------------------------------------------------------------
    "attribute_size": (
        "What size is the {object}?",
        "Is the {object} small or large?",
        "Please tell me how big the {object} is: small or large?",
        "Size of the {object}?",
        "The shapes come in two sizes. What size is the {object}?",
        "Would you call the {object} large or small?",
    ),
    "attribute_texture": (
        "What texture is the {object}?",
        "Is the {object} plain, striped or dotted?",
        "Please tell me which pattern fills the {object}: plain, striped or dotted?",
        "Texture of the {object}?",
        "Some shapes are filled with a pattern. What texture is the {object}?",
        "Describe the fill of the {object} in one word: plain, striped or dotted?",
    ),
    "attribute_larger": (
        "Which is larger, the {first} or the {second}?",
        "Which one is bigger: the {first} or the {second}?",
        "Please compare the {first} and the {second}. Which of the two is larger?",
        "Larger one: the {first} or the {second}?",
        "Both shapes may have a pattern. Which is larger, the {first} or the {second}?",
        "Of the {first} and the {second}, which has the greater size?",
    ),
    "count_of": (
        "How many {noun} are there?",
        "Count the {noun} in the image.",
        "How many {noun} can you see in this picture? Please give the number.",
        "Number of {noun}?",
        "Some shapes overlap a little. How many {noun} are in the picture?",
        "What is the total number of {noun} shown here?",
    ),
    "ground_all": (
        "Locate every {colour} object in the image and give their bounding boxes.",
        "Find all {colour} objects and give their bounding boxes.",
        "Please find each {colour} object in this picture and list the bounding box of every one.",
        "Bounding boxes of all {colour} objects?",
        "Other colours may be present too. Locate every {colour} object and give their bounding boxes.",
        "Draw boxes around each {colour} object: what are their coordinates?",
    ),
    # --- text ---------------------------------------------------------------------------------------------------
    "ocr": (
        "What is written in the image?",
        "What word is shown?",
        "Please read the word in this picture and write it exactly as it appears.",
        "OCR this image.",
        "The letters may be tilted. What does the image say?",
        "Transcribe the single word you see in the picture.",
    ),
    "ocr_line": (
        "Read the text in the image.",
        "What does the text say?",
        "Please transcribe the line of text in this picture exactly, keeping its capital letters.",
        "OCR this line.",
        "The text may mix fonts. Read the text in the image.",
        "Copy out the words written in the picture.",
    ),
    # --- charts -------------------------------------------------------------------------------------------------
    "chart_json": (
        "Convert the chart to JSON.",
        "Give the chart's data as JSON.",
        "Please read every bar or point of the chart and return the values as a JSON object keyed by label.",
        "Chart to JSON.",
        "This chart comes from a small report. Convert the chart to JSON.",
        "Extract the data plotted in this chart as a JSON object.",
    ),
    "chart_value": (
        "What is the value of {label}?",
        "How high is {label} in the chart?",
        "Please read the value of {label} off the chart.",
        "Value of {label}?",
        "The chart shows several labels. What is the value of {label}?",
        "According to the chart, what number does {label} reach?",
    ),
    "chart_diff": (
        "How much larger is {a} than {b}?",
        "By how much does {a} exceed {b}?",
        "Please look at the chart and work out how much bigger the value of {a} is than that of {b}.",
        "{a} minus {b}?",
        "The axis starts at zero. How much larger is {a} than {b}?",
        "Compute the difference between {a} and {b}: the value of {a} minus the value of {b}.",
    ),
    "chart_pie": (
        "Convert the pie chart to JSON.",
        "Give the pie chart's shares as JSON.",
        "Please read the percentage of each slice and return them as a JSON object keyed by letter.",
        "Pie chart to JSON.",
        "The colours of the slices do not matter. Convert the pie chart to JSON.",
        "Extract each slice's percentage from this pie chart as JSON.",
    ),
    # --- reasoning ----------------------------------------------------------------------------------------------
    "count_sum": (
        "How many {a} and {b} objects are there in total?",
        "What is the total number of {a} and {b} objects?",
        "Please count the {a} objects and the {b} objects. How many are there together?",
        "Total {a} and {b} objects?",
        "Ignore every other colour. How many {a} and {b} objects are there in total?",
        "Add up the {a} objects and the {b} objects: what do you get?",
    ),
    "count_more": (
        "Are there more {a} or {b} objects?",
        "Which colour has more objects, {a} or {b}?",
        "Please count carefully. Which color appears on more objects: {a} or {b}?",
        "More {a} or {b}?",
        "Shapes do not matter here. Are there more {a} or {b} objects?",
        "Of {a} and {b}, which colour do more of the objects have?",
    ),
    "geometry": (
        "What is the {question} of the rectangle, in grid squares?",
        "Find the {question} of the rectangle, measured in grid squares.",
        "Please count the grid squares and tell me the {question} of the coloured rectangle.",
        "Rectangle {question} in grid squares?",
        "The grid lines are evenly spaced. What is the {question} of the rectangle, in grid squares?",
        "Using one grid square as the unit, how large is the rectangle's {question}?",
    ),
    "pattern": (
        "Which shape comes next in the row?",
        "What comes next in the sequence?",
        "The row of shapes repeats. Please tell me which shape should replace the question mark.",
        "Next shape?",
        "Both colour and shape matter. Which shape comes next in the row?",
        "Fill in the question mark: what shape continues the pattern?",
    ),
    # --- video --------------------------------------------------------------------------------------------------
    "video_order": (
        "In what order do the shapes appear?",
        "List the shapes in the order they appear.",
        "Please watch the video and list the shapes in the order in which they show up.",
        "Order of appearance?",
        "The shapes never move. In what order do the shapes appear?",
        "Name the shapes from the first to appear to the last.",
    ),
    "video_time": (
        "At which second does the {object} appear?",
        "When does the {object} appear?",
        "Please tell me at what time, in seconds, the {object} first shows up in the video.",
        "Second the {object} appears?",
        "The video plays at two frames per second. At which second does the {object} appear?",
        "How many seconds into the video does the {object} come into view?",
    ),
    "video_count": (
        "How many shapes appear in the video?",
        "Count the shapes that appear in the video.",
        "Please watch the whole video and tell me how many shapes show up.",
        "Number of shapes in the video?",
        "The shapes appear one at a time. How many shapes appear in the video?",
        "What is the total number of shapes that come into view?",
    ),
    "video_motion": (
        "Which way does the {object} move?",
        "In which direction does the {object} move?",
        "Please watch the {object}: does it move left, right, up or down?",
        "Direction of the {object}?",
        "The background stays still. Which way does the {object} move?",
        "Where is the {object} heading: left, right, up or down?",
    ),
    "video_events": (
        "List the events in the video with their times.",
        "What happens in the video, and when?",
        "Please list every appearance and disappearance in the video with its second, in order.",
        "Events with times?",
        "Shapes come and go in this video. List the events in the video with their times.",
        "Give a timeline of the clip: each event with the second it happens.",
    ),
    "video_disappear": (
        "At which second does the {object} disappear?",
        "When does the {object} disappear?",
        "Please tell me at what time, in seconds, the {object} vanishes from the video.",
        "Second the {object} disappears?",
        "Other shapes may come and go. At which second does the {object} disappear?",
        "How many seconds into the video does the {object} leave the picture?",
    ),
    # --- documents ----------------------------------------------------------------------------------------------
    "doc_receipt": (
        "Extract the receipt as JSON with keys store, items (name, price) and total.",
        "Convert the receipt to JSON with keys store, items (name, price) and total.",
        "Please read this receipt and return a JSON object with the keys store, items (each with name and "
        "price) and total.",
        "Receipt to JSON: store, items (name, price), total.",
        "Prices are in the local currency. Extract the receipt as JSON with keys store, items (name, price) "
        "and total.",
        "Transcribe the receipt into JSON using the keys store, items (with name and price) and total.",
    ),
    "doc_form": (
        "Extract the form as JSON with keys {keys}.",
        "Convert the form to JSON with keys {keys}.",
        "Please read the filled-in form and return a JSON object with the keys {keys}.",
        "Form to JSON: {keys}.",
        "This form was scanned at a front desk. Extract the form as JSON with keys {keys}.",
        "Transcribe the form into JSON using the keys {keys}.",
    ),
    "doc_table": (
        "Convert the table to JSON: a list of rows with keys name, qty and price.",
        "Give the table as JSON: a list of rows with keys name, qty and price.",
        "Please read the table and return a JSON list with one object per row, using the keys name, qty and "
        "price.",
        "Table to JSON (rows: name, qty, price).",
        "The table lists items from a shop. Convert the table to JSON: a list of rows with keys name, qty and "
        "price.",
        "Transcribe each row of the table into a JSON list of objects with keys name, qty and price.",
    ),
    # --- gui ----------------------------------------------------------------------------------------------------
    "gui_menu": (
        "Open the {label} menu. Give the action as JSON.",
        "Open the {label} menu. Answer with the action in JSON.",
        "Please tell me which action opens the {label} menu, as JSON.",
        "Open menu {label}. JSON action.",
        "You are operating this app. Open the {label} menu. Give the action as JSON.",
        "Show the {label} menu: what action do you take? Reply in JSON.",
    ),
    "gui_button": (
        "Click the {label} button. Give the action as JSON.",
        "Press the {label} button. Answer with the action in JSON.",
        "Please tell me which action clicks the {label} button, as JSON.",
        "Click {label}. JSON action.",
        "You are operating this app. Click the {label} button. Give the action as JSON.",
        "Hit the {label} button: what action do you take? Reply in JSON.",
    ),
    "gui_item": (
        "Select {label} in the list. Give the action as JSON.",
        "Choose {label} from the list. Answer with the action in JSON.",
        "Please tell me which action selects {label} in the list, as JSON.",
        "Select list item {label}. JSON action.",
        "You are operating this app. Select {label} in the list. Give the action as JSON.",
        "Pick the row {label} in the list: what action do you take? Reply in JSON.",
    ),
    "gui_type": (
        "Type {text} in the {label} field. Give the action as JSON.",
        "Enter {text} into the {label} field. Answer with the action in JSON.",
        "Please tell me which action types {text} in the {label} field, as JSON.",
        "Type {text} into {label}. JSON action.",
        "You are operating this app. Type {text} in the {label} field. Give the action as JSON.",
        "Fill the {label} field with {text}: what action do you take? Reply in JSON.",
    ),
    # --- dialogue (besides "count" and "color") -----------------------------------------------------------------
    "shape_of": (
        "What shape is the {colour} object?",
        "Which shape is {colour}?",
        "Please tell me the shape of the {colour} object. Answer with one word.",
        "Shape of the {colour} one?",
        "There are several shapes here. What shape is the {colour} object?",
        "What kind of figure is drawn in {colour}?",
    ),
    "where_it": (
        "Where is it? Give its bounding box.",
        "Where is that one? Give its bounding box.",
        "Please give me the bounding box of that object.",
        "Its bounding box?",
        "Thanks. Now, where is it? Give its bounding box.",
        "Can you box it? Reply with its coordinates.",
    ),
    "side_it": (
        "Is it on the left or the right half of the image?",
        "Is that one in the left or right half?",
        "Please tell me which half of the picture it is in, the left one or the right one.",
        "Left or right half?",
        "Thanks. Now, is it on the left or the right half of the image?",
        "On which side of the picture does it sit, left or right?",
    ),
    # --- retrieval (the numbered options follow the question) ---------------------------------------------------
    "retrieve_caption": (
        "Which caption matches the image? Answer with its number.",
        "Which of these captions describes the picture? Give its number.",
        "Please read the captions below and pick the one that fits the image. Answer with the caption's number.",
        "Matching caption? Number only.",
        "Only one caption is right. Which caption matches the image? Answer with its number.",
        "Choose the description that fits this picture and reply with its number.",
    ),
    "retrieve_image": (
        'Which panel matches the caption "{caption}"? Answer with its number.',
        'Which panel shows "{caption}"? Give its number.',
        'Please look at the numbered panels and tell me which one fits the caption "{caption}". Answer with '
        "its number.",
        'Panel for "{caption}"? Number only.',
        'The panels are numbered from 1. Which panel matches the caption "{caption}"? Answer with its number.',
        'Find the picture described by "{caption}" and reply with its panel number.',
    ),
}
