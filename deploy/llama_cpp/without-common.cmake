# Included by CMake right after llama.cpp's project() (CMAKE_PROJECT_llama.cpp_INCLUDE, set by cmake-args.sh).
# llama-cpp-python forces LLAMA_BUILD_COMMON on, but its Python package loads only libllama and ggml: the common
# library (argument parsing, chat templates, JSON) serves llama.cpp's own tools and was more than half of the
# compile time (about 200 of 360 CPU-seconds on x86-64).
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama.cpp common library: not used by the Python package" FORCE)
