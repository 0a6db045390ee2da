"""GSM8K (train 7,473 / test 1,319, MIT licence, see LICENSE-GSM8K), shipped
gzip-compressed so the environment works with no network."""
