# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: id,tags,nbgrader
#     notebook_metadata_filter: kernelspec,language_info
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
#   language_info:
#     name: python
# ---

# %% [markdown] id="intro" nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # What does a convolutional network learn?
#
# In this session you train a small convolutional network (a CNN) to sort tiny
# 32×32 photos into ten classes (the CIFAR-10 dataset: airplane, automobile, bird,
# cat, deer, dog, frog, horse, ship, truck). Then you open it up and look inside it,
# six ways:
#
# 1. **Filters**: the small patterns its first layers look for.
# 2. **Activations**: the 128 numbers it computes for every image just before it
#    decides. Each of the 128 is called a *unit*; some of them never fire.
# 3. **Top-K images**: for one unit, the test images that excite it most.
# 4. **Occlusion**: which part of those images the unit really relies on.
# 5. **A map of its feature space (t-SNE)**: all the test images on one 2-D map,
#    each close to the images the network finds similar.
# 6. **One unit, every view**: gradient maps, Grad-CAM, an exact contribution map and
#    images synthesized for a unit, beside occlusion, and a sanity check of which of
#    these explanations to trust.
#
# Section 7 is **optional**: what the synthesized images say about the units that never
# fire, and a second test of the maps. It holds no exercise, so a class short of time
# can stop after section 6 and miss nothing that is graded.
#
# Twelve exercises punctuate the way. Eight check themselves: run the cell below your
# answer and it prints `Exercise N: correct.` or a hint. Four are short written
# answers for your instructor. Exercises 1 to 9 follow the sections in order;
# in Exercises 10 to 12 you write the code behind three of the lab's tools, where the
# lesson meets them: a forward hook (section 2), a ranking of images (section 3) and a
# gradient by backpropagation (section 6).
#
# **Time.** About 2 h for the core (everything but section 7), and 3 minutes more for
# section 7. In minutes, section by section:
#
# | section | reading | running the cells | exercises | in all |
# | --- | ---: | ---: | ---: | ---: |
# | Introduction | 3 | 0 | 0 | 3 |
# | 0. Set-up: the data and a trained network | 2 | 9 | 0 | 11 |
# | 1. Filters | 3 | <1 | 15 | 18 |
# | 2. Activations: 128 numbers per image | 4 | <1 | 15 | 19 |
# | 3. The images each unit likes best | 3 | <1 | 15 | 18 |
# | 4. Occlusion: which pixels does a unit rely on? | 2 | <1 | 5 | 8 |
# | 5. A map of the feature space (t-SNE) | 2 | 1 | 5 | 8 |
# | 6. One unit, every view | 8 | <1 | 25 | 34 |
# | 7. Optional: dead units, and a second test of the maps | 3 | <1 | 0 | 3 |
# | What you have seen | 1 | 0 | 0 | 1 |
# | **core: all but the optional section** | | | | **120** |
# | **optional section** | | | | **3** |
#
# The cells' time was measured by running the notebook once with its model answers, as
# it comes (the `full` profile, training included), on a 2-core AMD EPYC without native
# bf16 (so in fp32, as on most laptops); reading is counted at 180 words a minute; each
# exercise gets an allowance, not a measurement: 10 minutes where you write several
# lines of code, 5 for a one-line or a written answer (`benchmarks/bench_lesson_time.py`
# adds them up). Discussion and the explorers come on top. On a GPU, or with
# `PRETRAINED = True` in the set-up cell, most of the set-up's time goes away.
#
# **How to work.** Run the cells in order, from the top (Shift+Enter). Where a cell
# says `# YOUR CODE HERE`, delete the line `raise NotImplementedError()` and write
# your answer in its place; where it says *YOUR ANSWER HERE*, double-click the cell
# and write. If the kernel restarts, run everything again from the top: the trained
# network was saved, so it is reloaded, not trained again.
#
# **Reading the code.** Every function called here comes from `cnnlab`, a small
# library with one file per section of this lab. Each section names the function it
# uses and its file (for example `cnnlab.plot_filters`, in `cnnlab/filters.py`). To
# read one without leaving the notebook, run `cnnlab.plot_filters??` in a new cell.
#
# *Credits.* This lab descends from the interpretability lab of the UPC postgraduate
# course *Artificial Intelligence with Deep Learning* (2019) by Daniel Fojo and
# Xavier Giró-i-Nieto, after earlier versions by Amaia Salvador (slides:
# `dlai_2019_d07l1_interpretability` in the
# [telecombcn-dl/dlai-2019](https://github.com/telecombcn-dl/dlai-2019) repository).
# This notebook and `cnnlab` are a new implementation.

# %% [markdown] id="setup_md" nbgrader={"grade": false, "grade_id": "setup_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 0. Set-up: the data and a trained network
#
# The next cell does everything the lab needs before it starts:
#
# - in Colab, it installs `cnnlab` (Colab's own PyTorch and widgets are kept as they are);
# - it reads the **profile**: `full` (the default: all 50,000 training images) or
#   `quick` (10,000 training and 2,000 test images: a first look in a few minutes, with
#   blurrier results). To choose `quick`, set the environment variable
#   `CNNLAB_PROFILE=quick` before starting Jupyter, or run
#   `import os; os.environ["CNNLAB_PROFILE"] = "quick"` in a new cell above this one;
# - it uses a GPU if there is one (in Colab: *Runtime → Change runtime type → GPU*),
#   else the CPU;
# - it loads CIFAR-10 (downloaded the first time, about 170 MB);
# - it trains the network, or reloads the one it trained before with the same recipe.
#   Training is part of the lab, but on a slow laptop it takes a while: set
#   `PRETRAINED = True` in the cell to use instead the course model that ships with
#   `cnnlab` (the `full` recipe, seed 0, 66-67 % test accuracy) and start at once. Every
#   analysis and exercise is the same.

# %% id="setup" nbgrader={"grade": false, "grade_id": "setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
CNNLAB_PACKAGE = "cnnlab==0.1.0"

import sys

if "google.colab" in sys.modules:
    # Colab already has torch, torchvision and ipywidgets: this adds cnnlab only.
    # %pip install -q "{CNNLAB_PACKAGE}"
    pass  # in this script the %pip line is a comment; the block needs a statement

# %matplotlib inline
import numpy as np
from IPython.display import display
from matplotlib.figure import Figure

import cnnlab

PRETRAINED = False  # True: use the trained course model shipped with cnnlab, no training
config = cnnlab.get_config()  # the profile named by $CNNLAB_PROFILE, "full" if unset
cnnlab.seed_everything(config.seed)
device = cnnlab.get_device(verbose=False)
print(f"cnnlab {cnnlab.__version__}: profile {config.profile!r}, device {device}"
      + (" (no GPU found: the CPU will do, training just takes longer)"
         if device.type == "cpu" else ""))
print("precision:", cnnlab.choose_precision(device, config.precision).describe())

train, test = cnnlab.load_lab_data(config)
print(f"{len(train):,} training and {len(test):,} test images ({test.source})")
if PRETRAINED:
    model, info = cnnlab.load_pretrained(device)
else:
    model, info = cnnlab.train_or_load(config, train, test, device=device)
print(f"The network classifies {info['metrics']['accuracy']:.1%} of the test images correctly.")

# %% [markdown] id="network_md" nbgrader={"grade": false, "grade_id": "network_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### The network
#
# Here it is, layer by layer. `model` is a PyTorch `nn.Sequential`, which is a list of
# layers applied one after the other: `model[0]` is the first layer, `model[2]` the
# third, and `model[:5]` the first five. Keep these numbers in view; the exercises
# use them.

# %% id="network" nbgrader={"grade": false, "grade_id": "network", "locked": true, "schema_version": 3, "solution": false, "task": false}
print(model)

# %% [markdown] id="network_after" nbgrader={"grade": false, "grade_id": "network_after", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Reading it from the top: four convolution layers (`Conv2d`) look at the image
# through small 3×3 windows, each followed by a `ReLU` that keeps the positive
# responses and sets the negative ones to zero. The two `MaxPool2d` layers halve the
# size of the image each time (32 → 16 → 8 pixels). `Flatten` lays the 64 maps of
# 8×8 out as one vector of 4,096 numbers, and `Linear(4096, 128)` turns those into
# the 128 numbers we call *units*. The last `Linear` turns the 128 units into 10
# scores, one per class; the highest score is the network's answer. The `Dropout`
# layers only act during training.

# %% [markdown] id="filters_md" nbgrader={"grade": false, "grade_id": "filters_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 1. Filters
#
# **The idea.** A convolution layer slides a set of small *filters* over its input.
# Each filter is a little block of weights, and its response at a position is large
# where the input there looks like the filter. The filters of the first layer are
# applied to the pixels themselves, so we can draw them as images and see what the
# network looks for first.
#
# **Why it matters.** The filters are the one part of a CNN we can look at directly,
# without any image. A well-trained first layer usually holds detectors of edges at
# various angles and of patches of colour, much like the first stage of our own
# visual system.
#
# ### Exercise 1 (1 point)
#
# How many filters does the first convolution layer, `model[0]`, have? Store the
# number in `n_filters`, read from the model rather than typed in: the layer has an
# attribute that holds it (type `model[0].` and press Tab to see them all).

# %% id="ex1_answer" nbgrader={"grade": false, "grade_id": "ex1_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
# Exercise 1: n_filters = the number of filters of model[0], read from the layer.
n_filters = None  # stays None until you answer below
### BEGIN SOLUTION
n_filters = model[0].out_channels
### END SOLUTION
print("n_filters =", n_filters)

# %% id="ex1_test" nbgrader={"grade": true, "grade_id": "ex1_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from cnnlab import checks

checks.check_exercise_1(n_filters, model)

# %% [markdown] id="conv1_md" nbgrader={"grade": false, "grade_id": "conv1_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# The layer's weights are a tensor of shape *(filters, input channels, height,
# width)*:

# %% id="conv1_shape" nbgrader={"grade": false, "grade_id": "conv1_shape", "locked": true, "schema_version": 3, "solution": false, "task": false}
model[0].weight.shape

# %% [markdown] id="plot_conv1_md" nbgrader={"grade": false, "grade_id": "plot_conv1_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# `cnnlab.plot_filters` (in `cnnlab/filters.py`) draws each filter as a small picture.
# It scales the whole weight tensor to
# [0, 1] once, so that all filters share one scale: mid-grey is a weight in the
# middle of the range, bright and dark colours are strong weights of either sign.

# %% id="plot_conv1" nbgrader={"grade": false, "grade_id": "plot_conv1", "locked": true, "schema_version": 3, "solution": false, "task": false}
cnnlab.plot_filters(model[0].weight, title="The 32 filters of the first conv layer, model[0]")

# %% [markdown] id="plot_conv1_after" nbgrader={"grade": false, "grade_id": "plot_conv1_after", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **What to look for.** Filters of one strong colour (they respond to that colour),
# filters with a bright side and a dark side (they respond to an edge: a change of
# brightness or colour in one direction), and filters that look like noise (they
# learned little; there are more of those after the short `quick` training). 3×3
# pixels is very small: do not expect pictures.
#
# **What a filter does to an image.** Applied at every position of an image, each
# filter gives a *feature map*, bright where the image matches the filter. Here is a
# test image and the 32 maps of the first layer for it, after the ReLU
# (`cnnlab.activation_maps` and `cnnlab.plot_activation_maps`, in `cnnlab/filters.py`).

# %% id="activation_maps" nbgrader={"grade": false, "grade_id": "activation_maps", "locked": true, "schema_version": 3, "solution": false, "task": false}
image_index = 0  # try others
label = test.classes[test.labels[image_index]]
photo = Figure(figsize=(2, 2.2), layout="constrained")
ax = photo.add_subplot()
ax.imshow(cnnlab.to_display(test.images[image_index]))
ax.set_title(f"test image {image_index}: {label}", fontsize=9)
ax.set_axis_off()
display(photo)

maps = cnnlab.activation_maps(model, test.images[image_index], layer=1)  # after the first ReLU
cnnlab.plot_activation_maps(maps, title=f"The 32 feature maps of model[0] for test image {image_index}")

# %% [markdown] id="filters_explore_md" nbgrader={"grade": false, "grade_id": "filters_explore_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **Now explore.** Pick a conv layer in the menu. For the layers after the first, the
# `channel` slider changes the picture (Exercise 3 asks what it chooses). `scale` switches between one scale for the whole layer (`global`, as above)
# and one scale per filter (`per filter`), which shows the pattern of weak filters
# too. (`cnnlab.widgets.filter_explorer`, in `cnnlab/widgets.py`.) The explorers need
# a running notebook: in a static copy, such as an HTML export, they show nothing.

# %% id="filters_explore" tags=["nbval-ignore-output"]
from cnnlab import widgets

widgets.filter_explorer(model)

# %% [markdown] id="ex2_md" nbgrader={"grade": false, "grade_id": "ex2_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 2 (1 point)
#
# Now the filters of the *second* convolution layer. Find it in the printout of the
# network above (it is not `model[1]`, which is a ReLU), put its weights in
# `conv2_weights`, and the cell draws them. Take the weights from the trained layer
# itself, the way `model[0].weight` gave the first layer's; add `.detach()` to get
# the numbers without their gradient bookkeeping.

# %% id="ex2_answer" nbgrader={"grade": false, "grade_id": "ex2_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
# Exercise 2: conv2_weights = the weights of the second conv layer.
conv2_weights = None  # stays None until you answer below
### BEGIN SOLUTION
conv2_weights = model[2].weight.detach().cpu()
### END SOLUTION
if conv2_weights is not None:  # drawn once you have answered
    print("conv2_weights has shape", tuple(getattr(conv2_weights, "shape", ())))
    display(cnnlab.plot_filters(conv2_weights, title="The filters of the second conv layer"))

# %% id="ex2_test" nbgrader={"grade": true, "grade_id": "ex2_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from cnnlab import checks

checks.check_exercise_2(conv2_weights, model)

# %% [markdown] id="ex3_md" nbgrader={"grade": false, "grade_id": "ex3_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 3 (written, 2 points)
#
# The first layer's filters are drawn in colour, the second layer's in grey. Why?
# Think about what the input channels of each layer are. Two or three sentences in
# the cell below are enough.

# %% [markdown] id="ex3_answer" nbgrader={"grade": true, "grade_id": "ex3_answer", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# **Your answer:**
#
# ### BEGIN SOLUTION
# The first layer's input is the image itself, whose 3 channels are red, green and
# blue. Each of its filters has one 3×3 kernel per colour channel, so its weights
# *are* a tiny colour image and can be drawn as one.
#
# The second layer's input is the 32 feature maps of the first layer, which are not
# colours. Each of its filters has 32 kernels, one per map, and 32 channels have no
# natural colour; so the figure shows only one of them (input channel 0), in grey.
#
# *Grading: 1 point for "the first layer has 3 input channels, the R, G and B of the
# image"; 1 point for "the second layer's 32 input channels are feature maps, not
# colours, and one of them is shown".*
# ### END SOLUTION

# %% [markdown] id="filters_think" nbgrader={"grade": false, "grade_id": "filters_think", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **Think about it.** A first-layer filter sees a 3×3 patch of pixels. How large a
# patch of the *image* does one value of the second layer's output depend on? And
# after the first `MaxPool2d`? This is the *receptive field*: it grows with every
# layer, which is how deeper layers can respond to whole objects while their
# filters stay 3×3.

# %% [markdown] id="activations_md" nbgrader={"grade": false, "grade_id": "activations_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 2. Activations: 128 numbers per image
#
# **The idea.** Give the network an image and stop at `Linear(4096, 128)`, its first
# fully connected layer: what comes out is 128 numbers, the image's *feature
# vector*. Each of the 128 positions is a **unit**, and the rest of the lab asks what
# each unit responds to.
#
# **Why it matters.** The last layer only weighs these 128 numbers into 10 class
# scores, so whatever the network knows about the image, it must be in them.
#
# **How.** Slicing an `nn.Sequential` gives a smaller `nn.Sequential` made of the same
# layers, with the same trained weights. `model[:3]` holds the layers 0, 1 and 2,
# exactly as slicing a Python list would. A slice that starts at the image and stops
# partway is called a *feature extractor*.
#
# ### Exercise 4 (2 points)
#
# Build `extractor`: the part of `model` that starts at the image and ends **with**
# the first `Linear` layer, that layer included. Its output must be 128 numbers per
# image. Count in the printout of the network.

# %% id="ex4_answer" nbgrader={"grade": false, "grade_id": "ex4_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
# Exercise 4: extractor = model from the image up to and including the first Linear.
extractor = None  # stays None until you answer below
### BEGIN SOLUTION
extractor = model[:14]
### END SOLUTION
extractor

# %% [markdown] id="features_md" nbgrader={"grade": false, "grade_id": "features_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Now run all the test images through it, 128 at a time (`cnnlab.extract_features`,
# in `cnnlab/activations.py`; the cell checks the extractor first, so a wrong one stops
# here with a hint). Row `i` of `features` is the feature vector of test image `i`;
# column `u` holds unit `u`'s response to every test image. (For another network,
# `cnnlab.feature_extractor` finds the first `Linear` layer by itself.)

# %% id="features" nbgrader={"grade": false, "grade_id": "features", "locked": true, "schema_version": 3, "solution": false, "task": false}
from cnnlab import checks

checks.check_exercise_4(extractor, model, quiet=True)  # a wrong extractor stops here
features = cnnlab.extract_features(extractor, test.images)

# %% id="features_shape" nbgrader={"grade": false, "grade_id": "features_shape", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("features")  # a hint, not a NameError, if a cell above stopped
print("one row per test image:", features.shape[0] == len(test))
print("one column per unit:   ", features.shape[1])
print("type of the numbers:   ", features.dtype)

# %% id="ex4_test" nbgrader={"grade": true, "grade_id": "ex4_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from cnnlab import checks

checks.check_exercise_4(extractor, model)
### BEGIN HIDDEN TESTS
assert features.shape == (len(test), 128), (
    f"features has shape {features.shape}, expected ({len(test)}, 128): one row of "
    "128 units per test image"
)
assert str(features.dtype) == "float32", f"features holds {features.dtype}, not float32"
### END HIDDEN TESTS

# %% [markdown] id="ex10_md" nbgrader={"grade": false, "grade_id": "ex10_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 10 (2 points): reach a layer with a forward hook
#
# Slicing reached the units because `model` is an `nn.Sequential`. Most networks are
# not: a ResNet calls its layers from its own `forward`, and no slice stops inside it.
# The tool that works for every network is a **forward hook**: a function attached to
# one layer with `layer.register_forward_hook(fn)`. From then on, each time the layer
# runs, PyTorch calls `fn(layer, inputs, output)`, and `fn` can keep what it needs.
# `register_forward_hook` returns a *handle*, and `handle.remove()` detaches the hook
# again; forget it, and your function keeps running on every later forward pass.
#
# Capture what the layer of the units, `Linear(4096, 128)`, gives out for the 64 test
# images `ex10_images` (set in the next cell). Attach a hook that stores the layer's
# output (in a list, a dict, or a variable of an enclosing function: any will do), run
# the **whole** network on the batch in eval mode, normalised with `cnnlab.normalize`
# and moved to `device`, without gradients, then remove the hook. Store the captured
# tensor in `hooked`. The check compares it with what an extractor gives on the same
# images, and verifies that no hook is left on the network.

# %% id="ex10_setup" nbgrader={"grade": false, "grade_id": "ex10_setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
ex10_images = test.images[:64]  # a batch of 64 test images, uint8 (64, 3, 32, 32)

# %% id="ex10_answer" nbgrader={"grade": false, "grade_id": "ex10_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
# Exercise 10: hooked = the output of the units' layer for ex10_images, caught by a hook.
hooked = None  # stays None until you answer below
### BEGIN SOLUTION
import torch

captured = []
handle = model[13].register_forward_hook(
    lambda layer, inputs, output: captured.append(output.detach()))
model.eval()
with torch.no_grad():
    model(cnnlab.normalize(ex10_images).to(device))
handle.remove()
hooked = captured[0]
### END SOLUTION

# %% id="ex10_test" nbgrader={"grade": true, "grade_id": "ex10_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from cnnlab import checks

checks.check_exercise_10(hooked, model, ex10_images)

# %% [markdown] id="class_means_md" nbgrader={"grade": false, "grade_id": "class_means_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# A first look at the units: for each class, how strongly each unit responds to its
# test images, compared with how it responds on average (in standard deviations).
# Red means "more than usual for this class", blue "less than usual". A unit that is
# red in one row only responds mostly to that class. (The extractor stops just before
# the ReLU that follows the `Linear` layer, so features can also be negative.)

# %% id="class_means" nbgrader={"grade": false, "grade_id": "class_means", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("features")
labels = test.labels.numpy()
typical, spread = features.mean(axis=0), features.std(axis=0) + 1e-6
per_class = np.stack([(features[labels == c].mean(axis=0) - typical) / spread
                      for c in range(len(test.classes))])
limit = np.abs(per_class).max()

fig = Figure(figsize=(11, 4), layout="constrained")
ax = fig.add_subplot()
image = ax.imshow(per_class, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
                  interpolation="nearest")
ax.set_yticks(range(len(test.classes)), test.classes)
ax.set_xlabel("unit")
ax.set_title("How each of the 128 units responds to each class, compared with its average")
fig.colorbar(image, ax=ax, label="std. deviations from average", pad=0.01)
fig

# %% [markdown] id="activations_think" nbgrader={"grade": false, "grade_id": "activations_think", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **Think about it.** Find a column that is red for one class only. Would you call
# that unit a "frog unit" (or whatever its class is)? What else could the images of
# one class have in common? Do the rows of the four vehicles look alike, and those of
# the six animals? Keep a unit's number in mind: section 3 shows which images excite
# it most.

# %% [markdown] id="firing_md" nbgrader={"grade": false, "grade_id": "firing_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **Units that never fire.** The extractor stops just before the ReLU, so a unit's value
# can be negative, and the ReLU then passes a zero to the rest of the network. A unit
# *fires* on an image when its value is positive. How often does each unit fire, and how
# large does it get at best? (`cnnlab.firing_stats` and `cnnlab.plot_firing`, in
# `cnnlab/activations.py`.)

# %% id="firing" nbgrader={"grade": false, "grade_id": "firing", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("features")
firing = cnnlab.firing_stats(features)
print(f"{len(firing.dead)} of {features.shape[1]} units never fire on these "
      f"{len(test):,} test images:", firing.dead.tolist())
cnnlab.plot_firing(firing)

# %% [markdown] id="firing_after" nbgrader={"grade": false, "grade_id": "firing_after", "locked": true, "schema_version": 3, "solution": false, "task": false}
# The red units are **dead** on the test images: their value is zero or less on every
# one of them, so after the ReLU they always send 0 and the network's answer never
# depends on them. A sizeable share of the layer ends up like this after training (the
# exact units change from one training run to the next): a unit whose value became
# negative on every training image receives no gradient through its ReLU, so nothing
# pulls it back. Keep them in mind in the next section. A dead unit still has "top"
# images, but they are only the images that make it *least negative*: they do not show
# what the unit detects, because no test image makes it respond at all.


# %% [markdown] id="topk_md" nbgrader={"grade": false, "grade_id": "topk_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 3. The images each unit likes best
#
# **The idea.** To see what a unit responds to, sort the test images by that unit's
# activation and look at the top few. If the ten images a unit likes best are all red
# cars seen from the side, the unit has learned something like "red car", or at
# least "red shape above wheels".
#
# **Why it matters.** It is the simplest way to give a name to an anonymous number
# inside a network, and the starting point of much larger studies. It has a trap
# too: ten images can have several things in common at once (colour, background,
# pose), and the images alone do not say which one the unit uses. Section 4 looks
# into that.

# %% [markdown] id="ex11_md" nbgrader={"grade": false, "grade_id": "ex11_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 11 (2 points): rank the images yourself
#
# Rank some images by hand first. Take the first 256 test images, `ex11_images` (set in
# the next cell): their feature vectors are the first 256 rows of `features`. Find the
# `ex11_k` of them that activate unit `ex11_unit` most, and store their indices (numbers
# from 0 to 255) in `ranked`, the best image first: a list, a NumPy array or a tensor.
# NumPy's `np.argsort`, PyTorch's `torch.argsort` and `torch.topk` can all do the sorting;
# read their documentation to see in which order each one gives its result.

# %% id="ex11_setup" nbgrader={"grade": false, "grade_id": "ex11_setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
ex11_unit = 14  # a unit of the Linear layer
ex11_k = 10  # how many images to keep
ex11_images = test.images[:256]  # the first 256 test images: rows 0-255 of features

# %% id="ex11_answer" nbgrader={"grade": false, "grade_id": "ex11_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
# Exercise 11: ranked = indices of the ex11_k images of ex11_images that unit ex11_unit
# likes best, the best first.
ranked = None  # stays None until you answer below
### BEGIN SOLUTION
activation = features[: len(ex11_images), ex11_unit]
ranked = np.argsort(-activation, kind="stable")[:ex11_k]
### END SOLUTION

# %% id="ex11_test" nbgrader={"grade": true, "grade_id": "ex11_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from cnnlab import checks

checks.check_exercise_11(ranked, model, ex11_images, ex11_unit, ex11_k)

# %% [markdown] id="topk_helper_md" nbgrader={"grade": false, "grade_id": "topk_helper_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# `cnnlab.top_k(features, k)` (in `cnnlab/activations.py`) ranks every unit at once, over
# the whole test set. It returns an array of shape `(k, 128)`: column `u` lists the
# indices of the `k` test images with the highest activation of unit `u`, the best
# first.

# %% id="topk" nbgrader={"grade": false, "grade_id": "topk", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("features")
top = cnnlab.top_k(features, k=config.top_k)
print("top has shape", top.shape, "= (images per unit, units)")
print("the 3 test images unit 0 likes best:", top[:3, 0])

# %% [markdown] id="ex5_md" nbgrader={"grade": false, "grade_id": "ex5_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 5 (1 point)
#
# A colleague who numbers things from 1 wrote the list below to look at six units and
# at one more, the one that closes the layer. Run the cell: it fails, and the message
# says why.

# %% id="ex5_broken" nbgrader={"grade": false, "grade_id": "ex5_broken", "locked": true, "schema_version": 3, "solution": false, "task": false}
units = [1, 2, 4, 14, 23, 29, 128]
checks.needs("top")
try:
    fig = cnnlab.plot_top_k(test.images, top, units)
except ValueError as error:
    print("ValueError:", error)
else:
    display(fig)

# %% [markdown] id="ex5_fix_md" nbgrader={"grade": false, "grade_id": "ex5_fix_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Write the corrected list in the cell below, as `units = [...]`: your colleague's
# list with only the wrong entry changed, to the unit they meant. (The message comes
# from `cnnlab.validate_units`, in `cnnlab/activations.py`.)

# %% id="ex5_answer" nbgrader={"grade": false, "grade_id": "ex5_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
# Exercise 5: units = the list above, with the invalid entry fixed.
### BEGIN SOLUTION
units = [1, 2, 4, 14, 23, 29, 127]
### END SOLUTION

# %% id="ex5_test" nbgrader={"grade": true, "grade_id": "ex5_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
from cnnlab import checks

checks.check_exercise_5(units)

# %% [markdown] id="topk_plot_md" nbgrader={"grade": false, "grade_id": "topk_plot_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Here are the ten test images each of these units likes best, the best at the top
# (`cnnlab.plot_top_k`, in `cnnlab/activations.py`):

# %% id="topk_plot" nbgrader={"grade": false, "grade_id": "topk_plot", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("top")
cnnlab.plot_top_k(test.images, top, units)

# %% [markdown] id="topk_dead_md" nbgrader={"grade": false, "grade_id": "topk_dead_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Before reading a column, check whether its unit fires at all (section 2): a dead unit's
# column holds its least negative images, not images that excite it.

# %% id="topk_dead" nbgrader={"grade": false, "grade_id": "topk_dead", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("features", "top", "firing")
for unit in cnnlab.validate_units(units, features.shape[1]):
    best = features[top[0, unit], unit]
    state = "dead: never positive" if unit in firing.dead else "fires"
    print(f"unit {unit:3d}: best value {best:+.2f}, positive on {firing.rate[unit]:5.1%} "
          f"of the test images ({state})")

# %% [markdown] id="topk_discuss" nbgrader={"grade": false, "grade_id": "topk_discuss", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **Questions for discussion.** Look down each column. Does the unit respond to
# something you can name: a class (horses), a part (wheels), a colour or a texture
# (blue sky, grass), a layout (a dark object on a light background)? Do several
# units respond to the same thing? If a column looks like ten unrelated images, what
# might that unit be doing?
#
# **Now explore.** Slide through all 128 units, change `K` to see more or fewer
# images, and press *occlusion masks* to see each image through its occlusion mask
# (section 4 explains them). (`cnnlab.widgets.unit_explorer`, in `cnnlab/widgets.py`.)

# %% id="topk_explore" tags=["nbval-ignore-output"]
from cnnlab import widgets

checks.needs("features", "extractor")
widgets.unit_explorer(test.images, features, k=config.top_k, extractor=extractor)

# %% [markdown] id="occlusion_md" nbgrader={"grade": false, "grade_id": "occlusion_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 4. Occlusion: which pixels does a unit rely on?
#
# **The idea.** Hide part of an image and see whether the unit notices. A black
# square of 11×11 pixels slides over the image, 4 pixels at a time (7 × 7 = 49
# positions); at each position we record how much the unit's activation *drops*
# compared with the intact image. The result is a 7×7 map per image: large where
# hiding that region hurts the unit, near zero where the unit does not care.
#
# **Why it matters.** The top images said *which* images a unit likes; occlusion says
# *where* in them it looks. It asks the network itself, by experiment, with no
# gradients or other assumptions, which makes it easy to trust, at the price of one
# forward pass per position.
#
# `cnnlab.top_k_occlusion` computes the maps of the chosen units on their top
# images, and `cnnlab.plot_occlusion` draws them, both in `cnnlab/occlusion.py`.

# %% id="occlusion" nbgrader={"grade": false, "grade_id": "occlusion", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("extractor", "top")
maps = cnnlab.top_k_occlusion(extractor, test.images, top, units,
                              size=config.occluder, stride=config.stride)
print("maps has shape", maps.shape, "= (top images, units, positions down, positions across)")

# %% [markdown] id="occluded_images_md" nbgrader={"grade": false, "grade_id": "occluded_images_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# Every number in a map comes from one occluded copy of the image: the black square
# at one position, the rest untouched. Here are five of the 49 copies of the first
# unit's best image, exactly as the network received them (`cnnlab.occluded_images`
# makes them with the same masks as `top_k_occlusion`; `cnnlab.plot_occluded` draws
# them). Position `p` is the map's cell `[p // 7, p % 7]`.

# %% id="occluded_images" nbgrader={"grade": false, "grade_id": "occluded_images", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("top")
positions = [0, 10, 24, 38, 48]
occluded = cnnlab.occluded_images(test.images[top[0, units[0]]], config.occluder,
                                  config.stride, positions=positions)
cnnlab.plot_occluded(occluded, labels=[f"cell [{p // 7}, {p % 7}]" for p in positions])

# %% [markdown] id="occlusion_one_md" nbgrader={"grade": false, "grade_id": "occlusion_one_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# To show a map on its image, `cnnlab.occlusion_mask` scales the map to [0, 1],
# enlarges it to 32×32 pixels (linear interpolation), smooths it (a Gaussian of 2
# pixels), then keeps the pixels at 0.5 or above at full brightness and dims the rest
# to 30%. **The bright part of an image is the part the unit relies on.** Here are
# the three steps for the first unit's best image:

# %% id="occlusion_one" nbgrader={"grade": false, "grade_id": "occlusion_one", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("top", "maps")
unit = units[0]
image = test.images[top[0, unit]]
omap = maps[0, 0]  # its best image (row 0), the first unit (column 0)
mask = cnnlab.occlusion_mask(omap, sigma=config.sigma, threshold=config.threshold)
largest = np.abs(omap).max()

fig = Figure(figsize=(9, 3.2), layout="constrained")
left, middle, right = fig.subplots(1, 3)
left.imshow(cnnlab.to_display(image))
left.set_title("the image")
shown = middle.imshow(omap, cmap="RdBu_r", vmin=-largest, vmax=largest)
middle.set_title("drop in activation, 7×7 positions")
fig.colorbar(shown, ax=middle, shrink=0.85)
right.imshow(cnnlab.to_display(image) * mask[..., None])
right.set_title("seen through its mask")
for ax in (left, middle, right):
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(f"Occlusion for unit {unit} on its best test image (#{top[0, unit]})")
fig

# %% [markdown] id="occlusion_plot_md" nbgrader={"grade": false, "grade_id": "occlusion_plot_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# And now the top-10 grid of section 3 again, every image seen through its own mask:

# %% id="occlusion_plot" nbgrader={"grade": false, "grade_id": "occlusion_plot", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("top", "maps")
cnnlab.plot_occlusion(test.images, top, units, maps,
                      sigma=config.sigma, threshold=config.threshold)

# %% [markdown] id="occlusion_explore_md" nbgrader={"grade": false, "grade_id": "occlusion_explore_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **Now explore.** Change the occluder's size and stride (new maps are computed: a
# few seconds) and the mask's threshold and smoothing (only redrawn). A small
# occluder can find small details, but hiding a few pixels seldom changes much; a
# large one hides whole objects at once. (`cnnlab.widgets.occlusion_explorer`, in
# `cnnlab/widgets.py`.)

# %% id="occlusion_explore" tags=["nbval-ignore-output"]
from cnnlab import widgets

checks.needs("extractor", "features")
widgets.occlusion_explorer(extractor, test.images, features, units, k=config.top_k)

# %% [markdown] id="ex6_md" nbgrader={"grade": false, "grade_id": "ex6_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 6 (written, 2 points)
#
# Compare the masked images with the plain top-10 images of section 3. For two or
# three units, by number: is the bright region where you expected, given what the
# top images seemed to have in common? Did occlusion change your mind about what any
# of them detects?

# %% [markdown] id="ex6_answer" nbgrader={"grade": true, "grade_id": "ex6_answer", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# **Your answer:**
#
# ### BEGIN SOLUTION
# The answer depends on the trained network; a good one names units and compares, for
# example:
#
# - Where a unit's top images share an object (horse heads, car fronts, a bird's
#   body), the mask usually sits on that object: the unit does use it, and the
#   reading from section 3 holds.
# - Often the mask lands on something the top images share *besides* the object:
#   the blue sky or water around planes and ships, the green or brown background of
#   frogs and deer, a bright patch of one colour. Such a unit detects context or
#   colour rather than the object, which the top images alone could not tell.
# - Some masks are spread out, or fall on different things in different images: the
#   unit responds to something spread over the image (a texture, the overall colour)
#   or to several unrelated things.
#
# A remark on the method also counts: an 11×11 black square is a large, unnatural
# change to a 32×32 image, so a unit may drop because of the black square itself, not
# only because of what it hides.
#
# *Grading: 1 point for specific units compared with their top images; 1 point for a
# reasoned conclusion (the masks confirm or change the reading, e.g. background
# rather than object) or a correct remark on the method's limits.*
# ### END SOLUTION

# %% [markdown] id="tsne_md" nbgrader={"grade": false, "grade_id": "tsne_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 5. A map of the feature space (t-SNE)
#
# **The idea.** Each test image is now a point in a 128-dimensional space: its
# feature vector. We cannot look at 128 dimensions, but t-SNE draws a 2-D map that
# tries to keep each point's nearest neighbours near it. First a PCA keeps the 20
# directions in which the features vary most (less noise, and a faster t-SNE); then
# t-SNE places the points on the plane. Each point is coloured by its image's true
# class; the network never saw these labels for these images.
#
# **Why it matters.** If the network has learned to tell two classes apart, their
# feature vectors lie in different regions, and the map shows two separate islands.
# Classes it confuses share one cloud. Read the map for neighbourhoods only: in
# t-SNE, the size of an island and the distance between two islands mean little.
#
# `cnnlab.embed` and `cnnlab.plot_embedding`, in `cnnlab/embedding.py`. It takes
# about half a minute on a laptop's CPU for 10,000 points.

# %% id="tsne" nbgrader={"grade": false, "grade_id": "tsne", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("features")
xy = cnnlab.embed(features, pca_dims=config.pca_dims, seed=config.seed,
                  max_iter=config.tsne_iter, perplexity=config.perplexity)
cnnlab.plot_embedding(xy, test.labels, test.classes)

# %% [markdown] id="tsne_explore_md" nbgrader={"grade": false, "grade_id": "tsne_explore_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **Now explore.** Untick classes to see where the others lie, and move the `point`
# slider to see the image behind a point (it is circled on the map). Look for points
# of one colour inside another colour's island: are they the network's mistakes,
# odd images, or both? (`cnnlab.widgets.embedding_explorer`, in `cnnlab/widgets.py`.)

# %% id="tsne_explore" tags=["nbval-ignore-output"]
from cnnlab import widgets

checks.needs("xy")
widgets.embedding_explorer(xy, test.labels, test.classes, test.images)

# %% [markdown] id="confusion_md" nbgrader={"grade": false, "grade_id": "confusion_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### The evidence: the confusion matrix
#
# The map shows which classes the *features* mix up. Whether the *network* mixes
# them up when it answers is in its confusion matrix: one row per true class, one
# column per predicted class, each row as fractions of that class's test images. The
# diagonal holds the right answers; a large number off the diagonal is a confusion.
# (`cnnlab.evaluate`, in `cnnlab/train.py`, and `cnnlab.plot_confusion`, in
# `cnnlab/metrics.py`.)

# %% id="confusion" nbgrader={"grade": false, "grade_id": "confusion", "locked": true, "schema_version": 3, "solution": false, "task": false}
result = cnnlab.evaluate(model, test)
cnnlab.plot_confusion(result.confusion, test.classes, result.per_class_accuracy)

# %% [markdown] id="ex7_md" nbgrader={"grade": false, "grade_id": "ex7_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 7 (written, 2 points)
#
# Which classes does the network separate easily, and which does it confuse? Use
# both figures: name the clear islands of the t-SNE map and the largest numbers off
# the diagonal of the confusion matrix. Why might those classes be hard to tell apart
# at 32×32 pixels?

# %% [markdown] id="ex7_answer" nbgrader={"grade": true, "grade_id": "ex7_answer", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# **Your answer:**
#
# ### BEGIN SOLUTION
# With the `full` profile, typically:
#
# - **Separated easily:** the vehicles (automobile, truck, ship, airplane) have
#   islands of their own and high accuracy; frog and horse usually do too.
# - **Confused:** cat and dog above all (the largest off-diagonal cells, cat → dog
#   and dog → cat, and one shared cloud on the map); more generally the animals
#   bird, cat, deer and dog mix with one another. Automobile ↔ truck and
#   airplane ↔ ship also trade errors, and their islands touch.
# - **Why:** at 32×32 pixels, cats and dogs share pose, fur, size and indoor
#   backgrounds, and what tells them apart (ears, muzzle) spans a few pixels. Planes
#   and ships share a plain blue background (sky or sea); cars and trucks share
#   wheels, windows and roads. The network leans on such cues (section 4 showed units
#   that use backgrounds), so classes with similar cues end up close together.
#
# The exact classes vary from run to run; what matters is that the answer reads them
# off the student's own figures and that both figures agree.
#
# *Grading: 1 point for the well-separated and the confused classes read correctly
# from the map and the matrix; 1 point for a plausible reason (shared shapes,
# textures or backgrounds; the low resolution).*
# ### END SOLUTION

# %% [markdown] id="views_md" nbgrader={"grade": false, "grade_id": "views_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 6. One unit, every view
#
# **The idea.** Sections 3 and 4 explained a unit two ways: the images it likes best,
# and the part of them it needs (occlusion). There are many more ways, and they do not
# always agree. This section puts them side by side, for the same units and the same
# images:
#
# - **Gradient** (a *saliency map*): how fast the unit's value changes when one pixel
#   gets brighter. One backward pass instead of occlusion's 49 forward passes.
# - **SmoothGrad**: the gradient averaged over noisy copies of the image, to calm its
#   speckle.
# - **Integrated Gradients**: gradients added up along a straight path from a black
#   image (the occluder's colour) to the image. The map sums to how much the unit
#   changes between the two.
# - **Guided backprop**: the gradient again, but with every negative signal stopped at
#   each ReLU on the way back. It draws sharp, photo-like maps.
# - **Grad-CAM**: the 64 feature maps of the last conv layer (16×16 each), weighted by
#   how much the unit grows with each map, added up, and the negative part set to zero.
# - **Contribution map**: exact, and coarse. The unit is `Linear(4096, 128)` applied to
#   64 maps of 8×8: its value is a sum of 4,096 products *weight × activation*, plus a
#   bias. Adding up the products over the 64 maps, position by position, splits the
#   unit's value over the 8×8 positions with nothing left over. Exercise 8 computes one.
# - **Synthesized image**: instead of searching the test set for the images a unit
#   likes, start from noise and change the image, step by step, to make the unit as
#   large as possible (gradient ascent, with small random shifts and rotations so that
#   the result is a pattern rather than noise tuned to exact pixels).
#
# **Why it matters.** Each method answers a slightly different question, and a map that
# looks convincing is not evidence. Where several methods agree, the explanation is
# probably about the network; where they disagree, at least one of them is telling you
# about something else. The end of the section tests them: an explanation of what a
# network *learned* must change when the learning is destroyed.
#
# `cnnlab.unit_views` (in `cnnlab/views.py`) computes every view of the chosen units on
# their top images; the methods themselves live in `cnnlab/attribution.py` (the maps) and
# `cnnlab/featvis.py` (the synthesized images). This takes a few seconds.

# %% id="views" nbgrader={"grade": false, "grade_id": "views", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("top")
views = cnnlab.unit_views(model, test.images, top, units, k=config.top_k)
print("gradient maps:    ", views.maps["gradient"].shape, "= (units, top images, 32, 32)")
print("contribution maps:", views.maps["contribution"].shape, "= (units, top images, 8, 8)")
print("synthesized:      ", tuple(views.synthesized.shape), "= one image per unit")

# %% [markdown] id="views_plot_md" nbgrader={"grade": false, "grade_id": "views_plot_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# One row per unit: its three best test images (titled with the unit's value on each),
# then every view of its best image, then the synthesized image with the value it
# reaches. In the maps, **red marks pixels that raise the unit and blue pixels that lower
# it**; each map has its own colour scale. (`cnnlab.plot_unit_views`, in
# `cnnlab/views.py`.)

# %% id="views_plot" nbgrader={"grade": false, "grade_id": "views_plot", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("views")
cnnlab.plot_unit_views(views)

# %% [markdown] id="views_look" nbgrader={"grade": false, "grade_id": "views_look", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **What to look for.**
#
# - Put each map beside the occlusion mask. Are the red regions where occlusion found
#   the unit's evidence, or somewhere else?
# - The plain gradient is speckled: it measures the effect of one pixel at a time, and a
#   network's response to single pixels is noisy. Do SmoothGrad and Integrated Gradients
#   look calmer, and do they still agree with occlusion?
# - The contribution map is coarse (each of its 8×8 cells covers 4×4 pixels) but it is
#   an exact account of the unit's value, not an estimate. Where is it red?
# - Grad-CAM is often blank ("all zero"): when the weighted sum of the feature maps is
#   negative everywhere, the final ReLU of Grad-CAM keeps nothing. The contribution map
#   has no such step, so it still shows what pushes the unit down.
# - The synthesized images are not photographs: they repeat the colours and textures
#   the unit likes. Do they remind you of its top images?
#
# **Now explore.** Slide through all 128 units, pick one view in the menu (or every
# view) and one of the unit's top images. A unit's views are computed the first time you
# reach it (a few seconds), then kept. (`cnnlab.widgets.attribution_explorer`, in
# `cnnlab/widgets.py`.)

# %% id="views_explore" tags=["nbval-ignore-output"]
from cnnlab import widgets

checks.needs("features", "views")
widgets.attribution_explorer(model, test.images, features, k=config.top_k, views=views)

# %% [markdown] id="ex12_md" nbgrader={"grade": false, "grade_id": "ex12_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 12 (2 points): a gradient map by hand
#
# `cnnlab.unit_views` computed the gradient maps for you; now compute one yourself, with
# autograd. Take unit `ex12_unit` on test image `ex12_index` (both set in the next cell)
# and find the gradient of the unit's value with respect to the image **as the network
# receives it**:
#
# 1. Make the network's input: the image through `cnnlab.normalize`, with a batch
#    dimension (`[None]`), on `device`. Ask PyTorch to track gradients for that tensor
#    with `.requires_grad_()`.
# 2. In eval mode, run it through the layers up to the units, and take the unit's value
#    there (before any ReLU).
# 3. Differentiate that value with respect to the input: `.backward()` and then the
#    input's `.grad`, or `torch.autograd.grad`.
#
# Store the result in `gradient`, one number per colour channel and pixel: shape
# (3, 32, 32). (The lab's maps add up the three channels; the check accepts that (32, 32)
# form too.)

# %% id="ex12_setup" nbgrader={"grade": false, "grade_id": "ex12_setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
ex12_unit = 23  # a unit of the Linear layer
ex12_index = 7  # a test image
ex12_image = test.images[ex12_index]
print(f"unit {ex12_unit} on test image {ex12_index}, a {test.classes[test.labels[ex12_index]]}")

# %% id="ex12_answer" nbgrader={"grade": false, "grade_id": "ex12_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
# Exercise 12: gradient = d (unit ex12_unit) / d (normalised ex12_image), by autograd.
gradient = None  # stays None until you answer below
### BEGIN SOLUTION
import torch

model.eval()
network_input = cnnlab.normalize(ex12_image[None]).to(device).requires_grad_()
model[:14](network_input)[0, ex12_unit].backward()
gradient = network_input.grad[0]
### END SOLUTION

# %% id="ex12_test" nbgrader={"grade": true, "grade_id": "ex12_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from cnnlab import checks

checks.check_exercise_12(gradient, model, ex12_image, ex12_unit)

# %% [markdown] id="contribution_md" nbgrader={"grade": false, "grade_id": "contribution_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### The contribution map, by hand
#
# `Linear(4096, 128)` sees what comes out of `model[:12]`: 64 feature maps of 8×8 (the
# conv layers, both pools and the dropouts, which do nothing in eval mode). `Flatten`
# only lays them out in one row of 4,096 numbers, channel by channel and, inside a
# channel, row by row. So the value of unit $u$ on an image is
#
# $$z_u = \sum_{c=1}^{64} \sum_{y=1}^{8} \sum_{x=1}^{8} W_u[c, y, x]\; a[c, y, x] \;+\; b_u,$$
#
# where $a$ holds the 64 feature maps, $W_u$ is row $u$ of the layer's weights
# (`model[13].weight[u]`, 4,096 numbers) arranged the same way as (64, 8, 8), and
# $b_u$ is its bias (`model[13].bias[u]`). Keep the sum over the channels $c$ and leave
# the positions $(y, x)$ alone: you get an 8×8 map $M$ with
# $\sum_{y,x} M[y, x] + b_u = z_u$ exactly. A positive cell is a region whose features
# raise the unit, a negative one a region that holds it down. (In the literature this
# is HiResCAM; Captum's `LayerGradientXActivation` on the layer's input computes the
# same numbers.)

# %% [markdown] id="ex8_md" nbgrader={"grade": false, "grade_id": "ex8_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 8 (2 points)
#
# Compute the contribution map of unit `ex8_unit` on test image `ex8_index` (both set in
# the next cell; leave them as they are) and store it in `contribution`, a tensor of
# shape (8, 8).
#
# 1. Run the image through the layers before `Flatten`. Normalise it first, as the
#    network expects, with `cnnlab.normalize`, give it a batch dimension with `[None]`,
#    and move it to the model's `device`.
# 2. Arrange the unit's weights and the feature maps both as (64, 8, 8) with `.view`.
# 3. Multiply them and add up over the channels only.
#
# Do it in eval mode and inside `with torch.no_grad():` (no gradients needed; `import
# torch` first). The check verifies the shape, the sign, and that your map plus the
# unit's bias adds up to the unit's value on the image; it never prints the map.

# %% id="ex8_setup" nbgrader={"grade": false, "grade_id": "ex8_setup", "locked": true, "schema_version": 3, "solution": false, "task": false}
ex8_unit = 23  # a unit that fires on most test images
ex8_index = 3  # a test image
ex8_image = test.images[ex8_index]
print(f"unit {ex8_unit} on test image {ex8_index}, a {test.classes[test.labels[ex8_index]]}")

# %% id="ex8_answer" nbgrader={"grade": false, "grade_id": "ex8_answer", "locked": false, "schema_version": 3, "solution": true, "task": false}
# Exercise 8: contribution = the (8, 8) contribution map of unit ex8_unit on ex8_image.
contribution = None  # stays None until you answer below
### BEGIN SOLUTION
import torch

model.eval()
with torch.no_grad():
    feature_maps = model[:12](cnnlab.normalize(ex8_image[None]).to(device)).view(64, 8, 8)
    contribution = (model[13].weight[ex8_unit].view(64, 8, 8) * feature_maps).sum(0)
### END SOLUTION
if contribution is not None:
    print("contribution has shape", tuple(getattr(contribution, "shape", ())))

# %% id="ex8_test" nbgrader={"grade": true, "grade_id": "ex8_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
from cnnlab import checks

checks.check_exercise_8(contribution, model, ex8_image, ex8_unit)
### BEGIN HIDDEN TESTS
import torch as _torch
from cnnlab.attribution import contribution_map as _contribution_map

_expected = _contribution_map(model[:14], ex8_image[None], ex8_unit)[0]
_given = _torch.as_tensor(contribution).detach().cpu().double().reshape(8, 8).numpy()
assert np.allclose(_given, _expected, rtol=1e-3, atol=1e-4 * (np.abs(_expected).max() + 1e-6)), (
    "contribution differs from cnnlab.attribution.contribution_map on the same image"
)
### END HIDDEN TESTS

# %% [markdown] id="sanity_md" nbgrader={"grade": false, "grade_id": "sanity_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### A sanity check: do the maps depend on what the network learned?
#
# **The idea** (Adebayo et al., *Sanity checks for saliency maps*, 2018). An explanation
# of a trained network should depend on what the network learned. So destroy what it
# learned and see whether the explanation notices. Starting with the unit's own layer,
# `Linear(4096, 128)`, replace the weights of one layer after another with fresh random
# ones, going down towards the image; after each step, compute every map of the same
# images again and compare it with the trained network's map. The comparison is the
# rank correlation of |map| (Spearman's): 1 means the pixels are ranked the same way,
# 0 that the two rankings are unrelated. As a reference, the figure also shows an edge
# detector of the image, which has no weights at all and so stays at 1.
#
# **Why it matters.** A method whose maps stay the same when the weights are random is
# describing the image (its edges, its contrast), not the network. It can look the most
# convincing of all, because edges are what we expect an object detector to use.
#
# (`cnnlab.sanity.cascading_randomization`, in `cnnlab/sanity.py`, works on a copy of
# the network. To keep this cell short it uses each unit's two best images; `cnnlab lab`
# uses all ten.)

# %% id="sanity" nbgrader={"grade": false, "grade_id": "sanity", "locked": true, "schema_version": 3, "solution": false, "task": false}
from cnnlab import sanity

checks.needs("extractor", "views")
sanity_images, sanity_targets, sanity_maps = views.batch(2)  # 2 best images per unit
randomization = sanity.cascading_randomization(extractor, sanity_images, sanity_targets)
sanity.plot_randomization(randomization)

# %% [markdown] id="sanity_look" nbgrader={"grade": false, "grade_id": "sanity_look", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **What to look for.** Follow each line from the left (the trained network) to the
# right (every weight random). What should happen to a method's line once the unit's
# own layer is re-initialised, if its maps explain what the network learned? Compare
# every line with that, and with the edge detector's. Exercise 9 asks about it.

# %% [markdown] id="ex9_md" nbgrader={"grade": false, "grade_id": "ex9_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Exercise 9 (written, 2 points)
#
# Which method fails the sanity check, and how can you tell from the figure? What does
# that mean for how far you can trust its maps, however sharp they look? Three or four
# sentences.

# %% [markdown] id="ex9_answer" nbgrader={"grade": true, "grade_id": "ex9_answer", "locked": false, "points": 2, "schema_version": 3, "solution": true, "task": false}
# **Your answer:**
#
# ### BEGIN SOLUTION
# **Guided backprop** fails. Its correlation with the trained maps stays high after the
# unit's own layer is re-initialised (around 0.8 with the `full` profile) and falls only
# slowly as more layers go, still clearly above the others with every weight random; its
# line is the closest to the edge detector's, which has no weights at all. The other
# methods (gradient, SmoothGrad, Integrated Gradients, Grad-CAM, the contribution map,
# occlusion) fall to 0.3 or less as soon as the unit's layer is random, and to about 0
# when every layer is.
#
# So guided backprop's maps are mostly a picture of the image: by stopping every
# negative signal at the ReLUs on the way back, it keeps the image's edges whatever the
# weights are. Its sharp, object-shaped maps are not evidence of what the unit detects;
# a method should pass this check before its maps are read as explanations.
#
# *Grading: 1 point for naming guided backprop with the evidence from the figure (its
# line stays high while the others fall, near the edge detector's); 1 point for the
# consequence (its maps reflect the input, e.g. edges, more than the learned weights, so
# they cannot be trusted as explanations of the network).*
# ### END SOLUTION

# %% [markdown] id="dead_views_md" nbgrader={"grade": false, "grade_id": "dead_views_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## 7. Optional: dead units, and a second test of the maps
#
# **The core of the lab ends with Exercise 9: every exercise is behind you.** If time is
# short, stop here and read *What you have seen* at the end. The two parts below go
# further, and nothing in them is graded: what the synthesized images say about the
# dead units, and a test of whether the maps point at the pixels that matter.
#
# ### The dead units again: what a synthesized image reveals
#
# Section 2 found units that are never positive on a test image, and their "top" images
# in section 3 were only the least negative ones. Is such a unit broken, or does it
# detect something that no test image contains? The synthesized image answers it: it
# was made for the unit, so if *any* image can make the unit positive, it probably does.

# %% id="dead_views" nbgrader={"grade": false, "grade_id": "dead_views", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("features", "views")
dead = set(cnnlab.dead_units(features).tolist())
for row, unit in enumerate(views.units):
    best, reached = views.activation[row, 0], views.synthesized_activation[row]
    note = "   dead on the test images" if unit in dead else ""
    print(f"unit {unit:3d}: best test image {best:+6.2f}   synthesized image {reached:+6.2f}{note}")

# %% [markdown] id="dead_views_after" nbgrader={"grade": false, "grade_id": "dead_views_after", "locked": true, "schema_version": 3, "solution": false, "task": false}
# With the `full` profile, every dead unit of the lab's list is driven above zero by its
# synthesized image, and the live units reach several times the value of their best
# test image. A dead unit is not broken: its weights describe a pattern, but no test
# photo contains enough of it to outweigh the unit's negative bias. Its top images, on
# the other hand, do not show that pattern; they are only the images that leave the
# unit least negative. When a unit's best value is below zero, do not read a concept into
# its top images.

# %% [markdown] id="faithfulness_md" nbgrader={"grade": false, "grade_id": "faithfulness_md", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ### Another test: do the maps point at what matters?
#
# **The idea.** If a map ranks the pixels well, removing the pixels it ranks highest
# should hurt the unit most. *Deletion*: remove the pixels in the map's order, the most
# important first, and follow the unit's value; the faster it falls, the better (a small
# area under the curve). *Insertion*: start from an image with every pixel removed and
# put them back in the same order; the faster the value rises, the better. Both are
# compared with removing pixels in random order.
#
# **Why it matters.** "Removing" a pixel has to put something in its place, and the
# network has never seen that something in training. The next two figures remove pixels
# two ways: painted **black** (the occluder's colour and Integrated Gradients'
# starting point) and replaced by a **blurred** copy of the image. Watch whether the
# ranking of the methods survives the change. (`cnnlab.sanity.faithfulness`, on the same
# images as the sanity check.)

# %% id="faithfulness_black" nbgrader={"grade": false, "grade_id": "faithfulness_black", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("extractor", "sanity_maps")
black = sanity.faithfulness(extractor, sanity_images, sanity_targets, sanity_maps,
                            fill="black")
sanity.plot_faithfulness(black)

# %% id="faithfulness_blur" nbgrader={"grade": false, "grade_id": "faithfulness_blur", "locked": true, "schema_version": 3, "solution": false, "task": false}
checks.needs("extractor", "sanity_maps")
blur = sanity.faithfulness(extractor, sanity_images, sanity_targets, sanity_maps,
                           fill="blur")
sanity.plot_faithfulness(blur)

# %% [markdown] id="faithfulness_look" nbgrader={"grade": false, "grade_id": "faithfulness_look", "locked": true, "schema_version": 3, "solution": false, "task": false}
# **What to look for.** Compare every curve with the dashed random ranking first. With
# the black fill, removing pixels at random can hurt the unit *more* than removing the
# pixels any map ranks first: a scatter of black dots is a stranger image than one black
# region, so the test partly measures the fill rather than the map. With the blur fill,
# which changes an image more gently, the maps beat the random ranking more clearly; is
# the winner the same as with black? (Integrated Gradients starts its path from black,
# so it is at home with the black fill.) With two images per unit these curves are
# noisy; `cnnlab lab` draws them for every top image. No single test settles which map to
# trust: the sanity check rules a method out, faithfulness ranks the others only for one
# meaning of "removing a pixel".

# %% [markdown] id="wrap_up" nbgrader={"grade": false, "grade_id": "wrap_up", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## What you have seen
#
# - The **filters** of the first layer are small colour and edge detectors, and they
#   are the only weights we can read as pictures.
# - A **feature vector** of 128 units summarises each image; the network's answer is
#   a weighted vote of those units. Some units never fire, and their "top" images
#   only show what leaves them least negative.
# - The **top-K images** of a unit suggest what it detects, and **occlusion** tests
#   the suggestion: sometimes the unit looks at the object, sometimes at its
#   background or colour.
# - **t-SNE** and the **confusion matrix** show the same story at the scale of
#   classes: what the features keep apart, the network tells apart.
# - **One unit, every view**: gradient maps, Grad-CAM, the exact contribution map and
#   synthesized images answer "what does this unit use?" in different ways, and they do
#   not always agree. A **sanity check** (randomise the weights, see whether the map
#   changes) rules out a method whose sharp maps show the image rather than the
#   network; in the optional section, **deletion curves** rank the others only for one
#   way of removing a pixel.
#
# **Going further.** The library Captum implements these attribution methods and many
# more (its `Occlusion` does what section 4 did, its `LayerGradientXActivation` gives
# the contribution map); the sanity check comes from Adebayo et al., *Sanity checks for
# saliency maps* (NeurIPS 2018). The same questions can be asked of a class instead of a
# unit: every function of `cnnlab/attribution.py` also takes the whole network and a
# class number.
