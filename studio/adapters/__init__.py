"""Config -> engine translation, one adapter per engine; the only code besides commands that reads config nodes"""
