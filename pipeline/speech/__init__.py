"""Speech: text-to-speech engines that turn finished comments into audio."""
