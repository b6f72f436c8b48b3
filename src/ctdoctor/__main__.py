from ctdoctor.cli import entry

entry()
