from automl_img.cli import main

main()
