from datagen.cli import cli

cli(prog_name="datagen")
