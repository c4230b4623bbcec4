# The shared data and weights beside the checkout (../shared), for the product's Makefile and the lab's
# (research/Makefile): included by both, so the two never disagree on where the data is.
EDGECIFAR_ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
SHARED ?= $(EDGECIFAR_ROOT)/../shared

ifneq ($(wildcard $(SHARED)/data/cifar-10-python.tar.gz),)
export EDGECIFAR_DATA ?= $(abspath $(SHARED)/data/cifar-10-python.tar.gz)
endif
ifneq ($(wildcard $(SHARED)/weights/*.h5),)
export EDGECIFAR_WEIGHTS ?= $(abspath $(SHARED)/weights)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2
