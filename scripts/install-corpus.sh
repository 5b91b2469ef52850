#!/usr/bin/env bash
# The RNN-LM's default English corpus is Debian's `fortunes` package (about 2.5 MB of quotations,
# read from /usr/share/games/fortunes). Install it when we can; without it the `pydocs` corpus
# (Python's own bundled documentation text) is still there, so nothing breaks.
set -u
[ -d /usr/share/games/fortunes ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq fortunes >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq fortunes; }) >/dev/null 2>&1
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get install -y -qq fortunes >/dev/null 2>&1
  fi
fi
if [ -d /usr/share/games/fortunes ]; then
  echo "text corpus: Debian fortunes installed"
else
  echo "note: Debian's 'fortunes' package is not installed (sudo apt-get install fortunes);" \
       "the RNN-LM can still use the 'pydocs' corpus or your own uploaded text."
fi
